"""Bridge protocol v1: every message between an agent and its extension.

The WebSocket carries JSON objects; each has `type`, `id` and `protocol`. `parse()` turns a raw
frame into the right model (or raises `ProtocolError` naming the problem); `dump()` is the
other way. `python -m extension_bridge.protocol` prints the JSON Schema the extension is
written against (`extension/protocol_schema.json`).
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from pydantic.alias_generators import to_camel

from semantest.errors import JobErrorCode

PROTOCOL_VERSION: Literal[1] = 1


class ProtocolError(ValueError):
    """A frame that is not a valid message of this protocol version."""


class Message(BaseModel):
    """Fields every bridge message carries."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    protocol: Literal[1] = PROTOCOL_VERSION


class AddonVersion(BaseModel):
    """An addon the extension has registered."""

    id: str
    version: str


class Hello(Message):
    """Extension → agent, first message after connecting."""

    type: Literal["hello"] = "hello"
    extension_version: str
    user_scripts: bool
    addons: list[AddonVersion] = Field(default_factory=list)


class Ping(Message):
    """Keepalive (either way); answered with `pong`."""

    type: Literal["ping"] = "ping"


class Pong(Message):
    """Answer to `ping`."""

    type: Literal["pong"] = "pong"


class AddonReady(Message):
    """Extension → agent: an addon in a tab connected and can take jobs."""

    type: Literal["addon.ready"] = "addon.ready"
    tab_id: int
    url: str
    addon_id: str
    addon_version: str
    state: str = "ready"


class ChatTurn(BaseModel):
    """A `job.run` that is one message of a chat session rather than a one-off image prompt."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    chat_id: str
    #: Start a fresh conversation in the tab first (the chat's first message); otherwise the
    #: message continues the conversation the tab already shows.
    new: bool


class JobRun(Message):
    """Agent → extension: run one prompt with the addon in `tab_id`."""

    type: Literal["job.run"] = "job.run"
    tab_id: int
    job_id: str
    prompt: str
    options: dict[str, Any] = Field(default_factory=dict)
    #: Milliseconds the addon has for this job (what is left of the attempt's deadline); the
    #: addon runtime hands it to the driver as `options.timeoutMs`.
    timeout_ms: Annotated[int, Field(ge=1)] | None = None
    #: Set for a chat message: the addon types it into a conversation and reports the reply.
    chat: ChatTurn | None = None
    #: Whether the reply should carry an image (one-off image prompts always want one).
    generate_image: bool = True


class JobCancel(Message):
    """Agent → extension: stop `job_id` in `tab_id` (its deadline passed or the agent drains).

    The addon aborts the driver's waits and answers `job.error` with code `CANCELED`.
    """

    type: Literal["job.cancel"] = "job.cancel"
    tab_id: int
    job_id: str
    reason: str = "canceled"


class JobProgress(Message):
    """Extension → agent: a step of a running job."""

    type: Literal["job.progress"] = "job.progress"
    tab_id: int | None = None
    job_id: str
    progress: Annotated[int, Field(ge=0, le=100)]
    stage: str
    message: str | None = None


class CapturedImage(BaseModel):
    """An image the addon saw: its URL, and the bytes as a data: URL for blob:/data: images."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    url: str
    width: int | None = None
    height: int | None = None
    data_url: str | None = None


class JobResult(Message):
    """Extension → agent: the job's images, and the reply's text when the addon read it."""

    type: Literal["job.result"] = "job.result"
    tab_id: int | None = None
    job_id: str
    images: list[CapturedImage] = Field(default_factory=list)
    reply: str | None = None


class JobErrorMessage(Message):
    """Extension → agent: the job failed in the page."""

    type: Literal["job.error"] = "job.error"
    tab_id: int | None = None
    job_id: str
    #: A job error code: one of `JobErrorCode` (the schema's `$defs.JobErrorCode`).
    code: str
    message: str
    retryable: bool = False
    #: Seconds the provider asked to wait before trying again (a rate-limit notice's).
    retry_after_s: Annotated[int, Field(ge=0, le=86_400)] | None = None


AnyMessage = Annotated[
    Hello
    | Ping
    | Pong
    | AddonReady
    | JobRun
    | JobCancel
    | JobProgress
    | JobResult
    | JobErrorMessage,
    Field(discriminator="type"),
]
_adapter: TypeAdapter[AnyMessage] = TypeAdapter(AnyMessage)


def parse(frame: str | bytes) -> AnyMessage:
    """Validate one frame into its message model."""
    try:
        return _adapter.validate_json(frame)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ProtocolError(f"invalid bridge message: {problems}") from None


def dump(message: Message) -> str:
    """Serialise a message for the wire (camelCase)."""
    return message.model_dump_json(by_alias=True)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every message, for the extension and for docs.

    `$defs.JobErrorCode` is the kernel's list of job error codes (`semantest.errors`): the
    names a `job.error`'s `code` uses, so the extension, addons and agents agree on them.
    """
    schema = _adapter.json_schema(by_alias=True)
    schema.setdefault("$defs", {})["JobErrorCode"] = {
        "type": "string",
        "enum": [code.value for code in JobErrorCode],
        "description": "Job error codes (semantest.errors.JobErrorCode).",
    }
    return schema


if __name__ == "__main__":
    json.dump(json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
