"""What the SDK sends, shared by `Client` and `AsyncClient`.

Each SDK method becomes a `Call` (method, path, body, and whether repeating it after a dropped
connection is safe), built here; both clients send it the same way and read the reply with
`semantest.client_replies`, so the sync and async clients differ only in `await`. Also here:
where the controller is (`connection`) and what `wait` polls and when it stops.

Imports httpx (URLs only), pydantic and the kernel's models; never rich or typer.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from semantest.models import (
    BatchAccepted,
    BatchSummary,
    GenerateAccepted,
    ImageRecord,
    JobOptions,
    JobPage,
    JobRecord,
    JobStatus,
    Priority,
    Provider,
)

DEFAULT_URL = "http://127.0.0.1:8000"
API = "/api/v1"

#: What `generate` and `batch` accept as options: the model, or the same fields as a mapping
#: (camelCase or snake_case). The server validates them; the client sends them as they are.
Options = JobOptions | Mapping[str, Any]
#: One prompt of a batch: its text, or `{"prompt", "provider"?, "options"?}`.
BatchPrompt = str | Mapping[str, Any]


class WaitTimeout(TimeoutError):
    """`wait` gave up before the job or batch finished; `last` is what was seen last."""

    def __init__(self, message: str, last: JobRecord | BatchSummary) -> None:
        super().__init__(message)
        self.last = last


def connection(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The controller URL and API key: the explicit ones, else `SEMANTEST_URL` (default
    http://127.0.0.1:8000) and `SEMANTEST_API_KEY` (else `SEMANTEST_ADMIN_KEY`, the key
    `semantest up` runs with, as `semantest fleet` does)."""
    url = url or os.environ.get("SEMANTEST_URL") or DEFAULT_URL
    key = api_key or os.environ.get("SEMANTEST_API_KEY") or os.environ.get("SEMANTEST_ADMIN_KEY")
    return url.rstrip("/"), key or None


def auth_headers(api_key: str | None) -> dict[str, str]:
    """Headers every request carries."""
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


@dataclass(frozen=True)
class Call:
    """One HTTP request of the SDK.

    `replayable` says whether sending it again after the connection dropped mid-request is
    safe: reads are, and so are submissions, which always carry an `Idempotency-Key` (the
    server answers a repeated key with the first job). A cancel is not: a repeat after a cancel
    that went through answers 409. `credentials` is False for a URL outside the controller
    (an image on a CDN), which must never see the API key.
    """

    method: str
    path: str
    json: Any = None
    params: Mapping[str, str | int] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    replayable: bool = True
    credentials: bool = True
    follow_redirects: bool = False


def _value(choice: Provider | Priority | JobStatus | str) -> str:
    return choice.value if isinstance(choice, Provider | Priority | JobStatus) else choice


def _options(options: Options | None) -> dict[str, Any] | None:
    if options is None:
        return None
    if isinstance(options, JobOptions):
        return options.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return dict(options)


def _idempotency(key: str | None) -> dict[str, str]:
    # One key per call, made here when the caller gave none, so the call's retries are safe.
    return {"Idempotency-Key": key or uuid.uuid4().hex}


def generate_call(
    prompt: str,
    *,
    provider: Provider | str,
    options: Options | None,
    priority: Priority | str,
    idempotency_key: str | None,
) -> Call:
    """`POST /images/generate`."""
    body: dict[str, Any] = {"prompt": prompt, "provider": _value(provider)}
    body["priority"] = _value(priority)
    if (opts := _options(options)) is not None:
        body["options"] = opts
    return Call("POST", f"{API}/images/generate", body, headers=_idempotency(idempotency_key))


def batch_call(
    prompts: Sequence[BatchPrompt],
    *,
    provider: Provider | str | None,
    options: Options | None,
    priority: Priority | str,
    idempotency_key: str | None,
) -> Call:
    """`POST /images/batch`: `provider` and `options` are defaults for every prompt."""
    items: list[Any] = []
    for item in prompts:
        if isinstance(item, str):
            items.append(item)
        else:
            entry = dict(item)
            if "provider" in entry:
                entry["provider"] = _value(entry["provider"])
            if "options" in entry:
                entry["options"] = _options(entry["options"])
            items.append(entry)
    body: dict[str, Any] = {"prompts": items, "priority": _value(priority)}
    if provider is not None:
        body["provider"] = _value(provider)
    if (opts := _options(options)) is not None:
        body["options"] = opts
    return Call("POST", f"{API}/images/batch", body, headers=_idempotency(idempotency_key))


def status_call(job_id: str) -> Call:
    """`GET /images/status/{jobId}`."""
    return Call("GET", f"{API}/images/status/{_segment(job_id)}")


def batch_status_call(batch_id: str) -> Call:
    """`GET /batches/{batchId}`."""
    return Call("GET", f"{API}/batches/{_segment(batch_id)}")


def cancel_call(job_id: str) -> Call:
    """`POST /jobs/{jobId}/cancel`."""
    return Call("POST", f"{API}/jobs/{_segment(job_id)}/cancel", replayable=False)


def cancel_batch_call(batch_id: str) -> Call:
    """`POST /batches/{batchId}/cancel`: cancelling a batch twice is harmless."""
    return Call("POST", f"{API}/batches/{_segment(batch_id)}/cancel")


def jobs_call(
    *, status: JobStatus | str | None, batch_id: str | None, page_size: int, cursor: str | None
) -> Call:
    """`GET /jobs`, one page, newest first."""
    params: dict[str, str | int] = {"limit": page_size}
    if status is not None:
        params["status"] = _value(status)
    if batch_id is not None:
        params["batchId"] = batch_id
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", f"{API}/jobs", params=params)


@dataclass
class JobPages:
    """How far `jobs()` got through the caller's job list: the call for the next page, and
    which records of a page to hand out (at most `limit` in all, None: every one)."""

    status: JobStatus | str | None
    batch_id: str | None
    limit: int | None
    page_size: int
    cursor: str | None = None
    ended: bool = False

    def next_call(self) -> Call | None:
        """The next page's call, or None when there is nothing more to read."""
        if self.ended or (self.limit is not None and self.limit <= 0):
            return None
        size = self.page_size if self.limit is None else min(self.page_size, self.limit)
        return jobs_call(
            status=self.status, batch_id=self.batch_id, page_size=size, cursor=self.cursor
        )

    def take(self, page: JobPage) -> list[JobRecord]:
        """The records of `page` to hand out; remembers where the next page starts."""
        records = page.jobs if self.limit is None else page.jobs[: self.limit]
        if self.limit is not None:
            self.limit -= len(records)
        self.cursor = page.next_cursor
        self.ended = self.cursor is None or not page.jobs
        return records


def _segment(ident: str) -> str:
    """An id as one path segment: an id with a slash must not reach another route."""
    return urllib.parse.quote(ident, safe="")


# --- waiting --------------------------------------------------------------------------------

Target = str | GenerateAccepted | JobRecord | BatchAccepted | BatchSummary


def target_of(target: Target) -> tuple[str | None, str]:
    """(`"job"` | `"batch"` | None when only an id is known, the id)."""
    if isinstance(target, GenerateAccepted):
        return "job", target.job_id
    if isinstance(target, JobRecord):
        return "job", target.id
    if isinstance(target, BatchAccepted | BatchSummary):
        return "batch", target.batch_id
    return None, target


def finished(current: JobRecord | BatchSummary) -> bool:
    """True when the job or every job of the batch reached a final status."""
    if isinstance(current, JobRecord):
        return current.status.terminal
    return current.done


def poll_intervals(first_s: float = 0.1, longest_s: float = 2.0) -> Iterator[float]:
    """Pauses between status reads: quick at first, then every `longest_s`."""
    interval = first_s
    while True:
        yield interval
        interval = min(longest_s, interval * 1.5)


def download_call(image: ImageRecord | str, base_url: httpx.URL) -> Call:
    """`GET` of an image: its record's `url` (else its key's route on the controller), with
    the API key only when that is the controller; redirects (to a presigned URL) are followed,
    and httpx drops the key when one leaves the controller's origin."""
    if isinstance(image, str):
        url = image
    else:
        url = image.url or f"{API}/images/{urllib.parse.quote(image.key)}"
    target = base_url.join(url)
    ours = (target.scheme, target.host, target.port) == (
        base_url.scheme,
        base_url.host,
        base_url.port,
    )
    return Call("GET", url, headers={"Accept": "*/*"}, credentials=ours, follow_redirects=True)
