"""The job contract: statuses, requests, the job record and its parts.

One source of truth for what a job is, shared by the controller (HTTP), the agents (which
update records) and clients. Python names are snake_case; JSON is camelCase through aliases,
so `JobRecord.model_dump_json(by_alias=True)` is exactly what the API returns and what is stored
in Redis.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from enum import Enum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from semantest import providers
from semantest.errors import ValidationError
from semantest.providers import ProviderChoice as ProviderChoice  # re-exported
from semantest.providers import ProviderName as ProviderName  # re-exported


class Provider(str, Enum):
    """Well-known provider names, for SDK callers' convenience.

    Which providers a deployment accepts is data (`semantest.providers`: the addon registry's
    manifests and the API providers); the API validates against that, not against this enum.
    """

    SANDBOX = "sandbox"


#: The provider every build has; the live list is `semantest.providers.names()`.
KNOWN_PROVIDERS = (providers.DEFAULT_PROVIDER,)


class JobStatus(str, Enum):
    """Where a job is in its life: queued → leased → running → succeeded | failed | canceled."""

    QUEUED = "queued"
    LEASED = "leased"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        """True when the job will not change any more."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


class Priority(str, Enum):
    """Queue lane of a job."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Stage(str, Enum):
    """Short label of what a running job is doing, carried by progress events."""

    QUEUED = "queued"
    OPENING = "opening"
    TYPING = "typing"
    WAITING = "waiting"
    CAPTURING = "capturing"
    STORING = "storing"
    DONE = "done"


#: How every timestamp in the API's JSON is written (README, "Timestamps").
EPOCH = "Unix time: seconds since 1970-01-01 UTC, a number with a fraction (e.g. 1764081600.25)."


class CamelModel(BaseModel):
    """Base for every JSON-facing model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False
    )


#: Surrounding whitespace is stripped; the pattern says in the schema what stripping implies
#: (at least one other character), so a prompt the schema accepts is never refused. It names
#: the characters Python strips that a JSON Schema `\s` does not (U+001C-001F, U+0085).
Prompt = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=4000, pattern=r"[^\s\x1c-\x1f\x85]"
    ),
]


#: One side of an image size: 64 to 2048 pixels.
_SIDE = r"(6[4-9]|[7-9][0-9]|[1-9][0-9]{2}|1[0-9]{3}|20[0-3][0-9]|204[0-8])"
#: Which provider honours which option (README, "Options"; the schema's descriptions say the
#: same). A job that sets an option its provider does not honour is refused (422 naming the
#: field and the providers that honour it) rather than run without it; the browser providers
#: `chatgpt` and `gemini` take a prompt only.
HONOURED_BY: dict[str, tuple[str, ...]] = {
    "size": ("sandbox", "openai"),
    "count": ("sandbox", "openai", "stability"),
    "style": ("sandbox", "openai", "stability"),
    "model": ("sandbox", "openai"),
}


class JobOptions(CamelModel):
    """Generation options; every one is honoured by the providers `HONOURED_BY` lists."""

    size: Annotated[
        str | None,
        Field(
            pattern=rf"^{_SIDE}x{_SIDE}$",
            description="Image size `WxH`, each side 64 to 2048 pixels; default 512x512. "
            "Honoured by: sandbox, openai (renders exactly this size; OpenAI takes the sizes "
            "its model supports).",
        ),
    ] = None
    count: Annotated[
        int,
        Field(
            ge=1,
            le=4,
            description="Images per prompt, 1 to 4. Honoured by: sandbox, openai, stability (one "
            "reply with that "
            "many different images; the record lists them all).",
        ),
    ] = 1
    style: Annotated[
        str | None,
        Field(
            max_length=100,
            description="A style hint. Honoured by: sandbox, openai, stability (another "
            "picture per style; OpenAI's `style`, Stability's `style_preset`).",
        ),
    ] = None
    model: Annotated[
        str | None,
        Field(
            max_length=100,
            description="The provider's model. Honoured by: sandbox, openai (another picture "
            "per model; OpenAI's `model`).",
        ),
    ] = None
    #: Answer from the result cache when the same tenant asked the same thing before (within
    #: `SEMANTEST_RESULT_CACHE_TTL_S`), without a browser; the record says `cached: true`.
    cache: bool = False


#: A webhook URL's host: a DNS name or an IP address (IPv6 in brackets); no user info.
_WEBHOOK_HOST = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
_WEBHOOK_REST = r"(:[0-9]{1,5})?([/?#][!-~]*)?$"
#: What `WebhookTarget.url` accepts: http or https. The schema shows https only, which is what
#: a deployment accepts unless it allows private targets (then also http to loopback); that
#: rule depends on the settings, so the routes apply it (`controller/routes/webhooks.py`).
WEBHOOK_URL_PATTERN = rf"^https?://{_WEBHOOK_HOST}{_WEBHOOK_REST}"
WEBHOOK_HTTPS_PATTERN = rf"^https://{_WEBHOOK_HOST}{_WEBHOOK_REST}"


class WebhookTarget(CamelModel):
    """Where the events of a job or batch are posted (signed, Standard Webhooks)."""

    url: Annotated[
        str,
        StringConstraints(max_length=2000),
        Field(
            description="An https URL (`http://` only to a loopback address, where the "
            "deployment allows private targets). Addresses that resolve to loopback, private, "
            "link-local or metadata networks are refused.",
            json_schema_extra={"pattern": WEBHOOK_HTTPS_PATTERN},
        ),
    ]

    @field_validator("url")
    @classmethod
    def _an_http_url(cls, value: str) -> str:
        if re.fullmatch(WEBHOOK_URL_PATTERN, value) is None:
            raise ValueError(
                "must be an https URL with a host name or address, e.g. "
                "https://example.com/hooks (no user name or password)"
            )
        return value


def _webhook_target(value: Any) -> Any:
    """Records stored before webhooks were objects hold a bare URL string."""
    return {"url": value} if isinstance(value, str) else value


def check_honoured(provider: str | list[str] | None, options: JobOptions, where: str) -> None:
    """Refuse (422 naming `<where>.<option>`) an option set for a provider that ignores it."""
    names = [provider] if isinstance(provider, str) else list(provider or [])
    for option, honoured in HONOURED_BY.items():
        if getattr(options, option) == JobOptions.model_fields[option].default:
            continue
        for name in names:
            if name != providers.AUTO and name not in honoured:
                reason = f"not honoured by {name}; honoured by: {', '.join(honoured)}"
                field = f"{where}.{option}"
                raise ValidationError(f"{field} is {reason}", [{"field": field, "reason": reason}])


class GenerateRequest(CamelModel):
    """Body of `POST /api/v1/images/generate`."""

    prompt: Prompt
    provider: ProviderChoice = providers.DEFAULT_PROVIDER
    options: JobOptions = Field(default_factory=JobOptions)
    priority: Priority = Priority.NORMAL
    #: Posted to when the job ends (`job.succeeded`, `job.failed`, `job.canceled`).
    webhook: WebhookTarget | None = None

    @model_validator(mode="after")
    def _options_honoured(self) -> GenerateRequest:
        check_honoured(self.provider, self.options, "options")
        return self


class GenerateAccepted(CamelModel):
    """Answer to an accepted submission (202)."""

    job_id: str
    status: JobStatus
    status_url: str


class ImageRecord(CamelModel):
    """One stored image of a job.

    Stored records keep only `key`; `url` is filled when a record is served
    (`controller.records.present`), so the same record serves local, S3 and CDN URLs.
    """

    url: str | None = None
    key: str
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    width: int
    height: int
    content_type: str
    bytes: int
    source_url: str | None = None


class JobError(CamelModel):
    """Why a job failed: a job error code, a readable message, and whether a retry helps."""

    code: str
    message: str
    retryable: bool = False


class AttemptEntry(CamelModel):
    """One ended attempt of a job: where it ran, how it failed, and its evidence."""

    attempt: int
    provider: str
    agent: str | None = None
    error: JobError | None = None
    #: Evidence names (`screenshot`, `dom`, `console`, `state`) → where the API serves them.
    evidence: dict[str, str] = Field(default_factory=dict)
    at: float = Field(default_factory=time.time, description=EPOCH)


class JobRecord(CamelModel):
    """The job as stored in Redis and returned by `GET /api/v1/images/status/{jobId}`."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    tenant: str
    #: The provider the job runs (or ran last) on.
    provider: str
    #: For `provider: "auto"` or a list: every candidate in order of preference; a retryable
    #: failure fails over to the next one not tried (empty: this provider only).
    providers: list[str] = Field(default_factory=list)
    prompt: str
    options: JobOptions = Field(default_factory=JobOptions)
    priority: Priority = Priority.NORMAL
    status: JobStatus = JobStatus.QUEUED
    progress: Annotated[int, Field(ge=0, le=100)] = 0
    stage: Stage = Stage.QUEUED
    attempts: int = 0
    created_at: float = Field(default_factory=time.time, description=EPOCH)
    started_at: float | None = Field(default=None, description=EPOCH)
    finished_at: float | None = Field(default=None, description=EPOCH)
    agent: str | None = None
    #: Fencing token of the attempt that holds the job (`<worker>#<attempt>`); only that
    #: attempt may write the record. None while queued or waiting for a retry.
    lease: str | None = None
    images: list[ImageRecord] = Field(default_factory=list)
    error: JobError | None = None
    batch_id: str | None = None
    #: The job's own webhook target (a batch's is in the batch; else the tenant's default).
    webhook: WebhookTarget | None = None
    idempotency_key: str | None = None
    #: The last failed attempt's evidence: name → where the API serves it (the record stores
    #: `<attempt>/<file>`; `GET /api/v1/jobs/{jobId}/artifacts` lists every attempt's).
    artifacts: dict[str, str] = Field(default_factory=dict)
    #: Every ended attempt that failed: provider, agent, error and evidence.
    attempt_history: list[AttemptEntry] = Field(default_factory=list)
    #: Answered from the result cache: no browser ran this job.
    cached: bool = False
    #: In a batch, the job whose run answers this one too (same prompt, provider and options).
    same_as: str | None = None
    #: Chat jobs: the session, whether the message asks for an image, and the provider's reply.
    chat_id: str | None = None
    generate_image: bool = True
    reply: str | None = None

    _legacy_webhook = field_validator("webhook", mode="before")(_webhook_target)

    def result_fingerprint(self) -> str:
        """What makes two requests ask for the same result: provider, prompt, options.

        Batch dedup and the result cache compare it (per tenant); `options.cache` is left out.
        """
        asked = {
            "provider": self.provider,
            "prompt": self.prompt,
            "options": self.options.model_dump(mode="json", exclude={"cache"}),
            "image": self.generate_image,
        }
        return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> str:
        """The stored and served JSON form (camelCase)."""
        return self.model_dump_json(by_alias=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> JobRecord:
        """Parse a stored record."""
        return cls.model_validate_json(raw)


class BatchItem(CamelModel):
    """One prompt of a batch, with its own provider and options (the batch's are defaults)."""

    prompt: Prompt
    provider: ProviderChoice | None = None
    options: JobOptions | None = None


class BatchRequest(CamelModel):
    """Body of `POST /api/v1/images/batch`: 1-100 prompts, each a string or a `BatchItem`."""

    prompts: Annotated[list[Prompt | BatchItem], Field(min_length=1, max_length=100)]
    provider: ProviderChoice = providers.DEFAULT_PROVIDER
    options: JobOptions = Field(default_factory=JobOptions)
    priority: Priority = Priority.NORMAL
    #: Posted to when each job ends and when the whole batch has (`batch.completed`).
    webhook: WebhookTarget | None = None

    @model_validator(mode="after")
    def _options_honoured(self) -> BatchRequest:
        for n, item in enumerate(self.items()):
            where = "options" if item.options is self.options else f"prompts.{n}.options"
            assert item.options is not None
            check_honoured(item.provider, item.options, where)
        return self

    def items(self) -> list[BatchItem]:
        """Every prompt as a `BatchItem` with the batch's defaults filled in."""
        out = []
        for p in self.prompts:
            item = BatchItem(prompt=p) if isinstance(p, str) else p
            out.append(
                BatchItem(
                    prompt=item.prompt,
                    provider=item.provider or self.provider,
                    options=item.options or self.options,
                )
            )
        return out


class BatchAccepted(CamelModel):
    """Answer to an accepted batch (202)."""

    batch_id: str
    job_ids: list[str]
    status_url: str


class BatchStatus(str, Enum):
    """A batch as a whole: nothing started yet, some jobs not final, or all final."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"


class BatchSummary(CamelModel):
    """`GET /api/v1/batches/{batchId}`: counts by status, progress, and the jobs."""

    batch_id: str
    status: BatchStatus
    total: int
    counts: dict[str, int]
    #: Mean progress of the jobs, 0-100 (a final job counts 100).
    progress: Annotated[int, Field(ge=0, le=100)]
    done: bool
    created_at: float = Field(description=EPOCH)
    jobs: list[JobRecord]


class JobPage(CamelModel):
    """`GET /api/v1/jobs`: the caller's jobs, newest first; pass `nextCursor` for the next page."""

    jobs: list[JobRecord]
    next_cursor: str | None = None


class JobEvent(CamelModel):
    """One entry of a job's event stream: a status transition or a progress step."""

    job_id: str
    status: JobStatus
    progress: int = 0
    stage: Stage = Stage.QUEUED
    at: float = Field(default_factory=time.time, description=EPOCH)
    detail: dict[str, Any] = Field(default_factory=dict)
