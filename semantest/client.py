"""`semantest.Client`: the HTTP API as Python calls, over httpx (synchronous).

    from semantest import Client

    with Client() as client:                     # SEMANTEST_URL, SEMANTEST_API_KEY
        job = client.wait(client.generate("a paper boat on a canal"))
        png = client.download(job.images[0])

Every reply is one of the models of `semantest.models`; every error reply raises the
`semantest.errors` class of its code (`ValidationError`, `Unauthorized`, `JobNotFound`,
`RateLimited`, ...). 429 and 503 are retried after the `Retry-After` the server names, a few
times; a submission carries an `Idempotency-Key` (made per call when you pass none), so
retrying it after a dropped connection cannot queue the job twice. `semantest.AsyncClient`
is the same API with `await`. Requests are built in `semantest.client_calls`
and replies read in `semantest.client_replies`, shared by both.

`stream()` follows a job's or a batch's events as they happen (Server-Sent Events) and picks
a dropped connection up where it stopped (`semantest.client_stream`, shared by both).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import httpx

from semantest.client_calls import (
    BatchPrompt,
    Call,
    JobPages,
    Options,
    Target,
    WaitTimeout,
    auth_headers,
    batch_call,
    batch_status_call,
    cancel_batch_call,
    cancel_call,
    connection,
    download_call,
    finished,
    generate_call,
    poll_intervals,
    status_call,
    target_of,
)
from semantest.client_replies import (
    ApiError,
    ConnectionFailed,
    ImageMismatch,
    M,
    RetryPolicy,
    check_image,
    connection_failed,
    error_from,
    parse,
)
from semantest.client_stream import IDLE_TIMEOUT_S, StreamClosed, StreamState, stream_timeout
from semantest.errors import JobNotFound, NotFound
from semantest.live import StreamEvent
from semantest.models import (
    BatchAccepted,
    BatchSummary,
    GenerateAccepted,
    ImageRecord,
    JobPage,
    JobRecord,
    JobStatus,
    Priority,
    Provider,
)

#: The client's own exceptions (the server's are in `semantest.errors`).
__all__ = ["ApiError", "Client", "ConnectionFailed", "ImageMismatch", "WaitTimeout"]

OnUpdate = Callable[[JobRecord | BatchSummary], object]


class Client:
    """A client of one controller with one API key; use it as a context manager or `close()`.

    `url` and `api_key` default to `SEMANTEST_URL` (else http://127.0.0.1:8000) and
    `SEMANTEST_API_KEY` (else `SEMANTEST_ADMIN_KEY`, as `semantest up` sets it). `retries`
    bounds how often one call is repeated after 429/503 or a lost connection; a `Retry-After`
    longer than `max_retry_wait` is not waited for (the error is raised at once, with
    `retry_after_s`).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        max_retry_wait: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base_url, key = connection(url, api_key)
        self.policy = RetryPolicy(retries=retries, max_wait_s=max_retry_wait)
        self._http = httpx.Client(
            base_url=base_url, headers=auth_headers(key), timeout=timeout, transport=transport
        )

    @property
    def url(self) -> str:
        """The controller's base URL."""
        return str(self._http.base_url).rstrip("/")

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- jobs -------------------------------------------------------------------------------

    def generate(
        self,
        prompt: str,
        *,
        provider: Provider | str = Provider.SANDBOX,
        options: Options | None = None,
        priority: Priority | str = Priority.NORMAL,
        idempotency_key: str | None = None,
    ) -> GenerateAccepted:
        """Queue one prompt; `wait()` on the answer for the finished job."""
        call = generate_call(
            prompt,
            provider=provider,
            options=options,
            priority=priority,
            idempotency_key=idempotency_key,
        )
        return self._read(GenerateAccepted, call)

    def batch(
        self,
        prompts: Sequence[BatchPrompt],
        *,
        provider: Provider | str | None = None,
        options: Options | None = None,
        priority: Priority | str = Priority.NORMAL,
        idempotency_key: str | None = None,
    ) -> BatchAccepted:
        """Queue 1 to 100 prompts as one batch; each is a string or `{"prompt", "provider"?,
        "options"?}`, and `provider`/`options` are the defaults of every prompt."""
        call = batch_call(
            prompts,
            provider=provider,
            options=options,
            priority=priority,
            idempotency_key=idempotency_key,
        )
        return self._read(BatchAccepted, call)

    def status(self, job_id: str) -> JobRecord:
        """The job's record now."""
        return self._read(JobRecord, status_call(job_id))

    def batch_status(self, batch_id: str) -> BatchSummary:
        """The batch now: counts by status, progress, its jobs."""
        return self._read(BatchSummary, batch_status_call(batch_id))

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """Every failed attempt's evidence of a job: `attempt`, `name`, `file`, `url`, ..."""
        reply = self._send(Call("GET", f"/api/v1/jobs/{urllib.parse.quote(job_id)}/artifacts"))
        found: list[dict[str, Any]] = reply.json()["artifacts"]
        return found

    def download_artifact(self, url: str) -> bytes:
        """One artifact's bytes (its `url` from `artifacts()`)."""
        return self._send(download_call(url, self._http.base_url)).content

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job; `Conflict` when it had already finished."""
        return self._read(JobRecord, cancel_call(job_id))

    def cancel_batch(self, batch_id: str) -> BatchSummary:
        """Cancel every job of the batch that has not finished."""
        return self._read(BatchSummary, cancel_batch_call(batch_id))

    def jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        batch_id: str | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> Iterator[JobRecord]:
        """The caller's jobs, newest first, fetched a page at a time as you iterate; at most
        `limit` of them (all when None)."""
        pages = JobPages(status=status, batch_id=batch_id, limit=limit, page_size=page_size)
        while (call := pages.next_call()) is not None:
            yield from pages.take(self._read(JobPage, call))

    @overload
    def wait(
        self,
        target: GenerateAccepted | JobRecord,
        *,
        timeout: float = ...,
        on_update: OnUpdate | None = ...,
    ) -> JobRecord: ...

    @overload
    def wait(
        self,
        target: BatchAccepted | BatchSummary,
        *,
        timeout: float = ...,
        on_update: OnUpdate | None = ...,
    ) -> BatchSummary: ...

    @overload
    def wait(
        self, target: str, *, timeout: float = ..., on_update: OnUpdate | None = ...
    ) -> JobRecord | BatchSummary: ...

    def wait(
        self, target: Target, *, timeout: float = 600.0, on_update: OnUpdate | None = None
    ) -> JobRecord | BatchSummary:
        """Poll until the job (or every job of the batch) is final, and return it.

        `target` is what `generate`/`batch` answered, a record, or an id (a job id is tried
        first, then a batch id). `on_update` sees every read. `WaitTimeout` after `timeout`
        seconds, with the last read in `.last`.
        """
        kind, ident = target_of(target)
        deadline = time.monotonic() + timeout
        for pause in poll_intervals():
            kind, current = self._current(kind, ident)
            if on_update is not None:
                on_update(current)
            if finished(current):
                return current
            if time.monotonic() + pause > deadline:
                raise WaitTimeout(f"{kind} {ident} not finished after {timeout:g} s", current)
            time.sleep(pause)
        raise AssertionError("unreachable: poll_intervals never ends")

    def stream(
        self, target: Target, *, since: str | None = None, idle_timeout: float = IDLE_TIMEOUT_S
    ) -> Iterator[StreamEvent]:
        """The job's events, or every job's of the batch, as they happen, until it is final.

        `target` is what `generate`/`batch` answered, a record, or an id (a job id is tried
        first, then a batch id); `since` resumes after an event's `id`. A dropped connection
        is opened again with the last event's id, so no event is missed or repeated; after
        `retries` failed tries in a row, `ConnectionFailed`. A connection silent for
        `idle_timeout` seconds (the server sends heartbeats) counts as dropped.
        """
        state = StreamState.of(target, since)
        timeout = stream_timeout(self._http.timeout, idle_timeout)
        attempt = 0
        while not state.ended:
            call = state.call()
            try:
                with self._http.stream(
                    call.method, call.path, headers=call.headers, timeout=timeout
                ) as response:
                    if response.status_code == 204:
                        return
                    if not response.is_success:
                        response.read()
                        delay = state.refused(response, self.policy, attempt)
                    else:
                        state.opened()
                        for line in response.iter_lines():
                            if (event := state.take(line)) is not None:
                                attempt = 0
                                yield event
                        if state.ended:
                            return
                        raise StreamClosed("the server closed the stream before its end")
            except httpx.TransportError as exc:
                retry = self.policy.after_transport_error(call, exc, attempt)
                if retry is None:
                    raise connection_failed(self._http.base_url, exc) from exc
                delay = retry
            attempt += 1 if delay else 0
            time.sleep(delay)

    def download(self, image: ImageRecord | str) -> bytes:
        """The bytes of a stored image (checked against the record's sha256)."""
        response = self._send(download_call(image, self._http.base_url))
        return check_image(response.content, None if isinstance(image, str) else image.sha256)

    # --- transport --------------------------------------------------------------------------

    def _current(self, kind: str | None, ident: str) -> tuple[str, JobRecord | BatchSummary]:
        if kind == "batch":
            return kind, self.batch_status(ident)
        if kind == "job":
            return kind, self.status(ident)
        try:
            return "job", self.status(ident)
        except NotFound:
            pass
        try:
            return "batch", self.batch_status(ident)
        except NotFound:
            raise JobNotFound(f"no job or batch {ident!r}") from None

    def _request(self, call: Call) -> httpx.Request:
        request = self._http.build_request(
            call.method, call.path, json=call.json, params=call.params, headers=call.headers
        )
        if not call.credentials:
            request.headers.pop("Authorization", None)
        return request

    def _read(self, model: type[M], call: Call) -> M:
        return parse(model, self._send(call))

    def _send(self, call: Call) -> httpx.Response:
        """Send `call`, retrying as `self.policy` allows; the reply, or the error it means."""
        attempt = 0
        while True:
            delay: float | None
            try:
                response = self._http.send(
                    self._request(call), follow_redirects=call.follow_redirects
                )
            except httpx.TransportError as exc:
                delay = self.policy.after_transport_error(call, exc, attempt)
                if delay is None:
                    raise connection_failed(self._http.base_url, exc) from exc
            else:
                if response.is_success:
                    return response
                delay = self.policy.after_reply(response, attempt)
                if delay is None:
                    raise error_from(response)
            attempt += 1
            time.sleep(delay)
