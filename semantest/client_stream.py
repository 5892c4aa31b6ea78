"""What `stream()` shares between `Client` and `AsyncClient`: the event routes, reading
Server-Sent Events, and picking a dropped stream up where it stopped.

`stream()` reads `GET /api/v1/jobs/{jobId}/events` or `GET /api/v1/batches/{batchId}/events`
(the wire format: `semantest.live`). Each connection is read line by line through a
`StreamState`, which turns events into `StreamEvent`s, remembers the last event's id and sends
it back as `Last-Event-ID` when the connection has to be opened again, so a reader sees every
event once. The stream is over at its `end` event, or when the server answers 204 (the id sent
back was already at the end).

Imports httpx and the kernel's models; never rich or typer.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field

import httpx

from semantest.client_calls import API, Call, Target, target_of
from semantest.client_replies import RetryPolicy, error_from, known_fields
from semantest.errors import JobNotFound, SemantestError
from semantest.live import EVENT_END, EVENT_JOB, EVENT_STREAM, StreamEvent

#: Seconds without a byte (event or heartbeat) after which a stream counts as dropped; the
#: server sends a heartbeat every `SEMANTEST_LIVE_HEARTBEAT_S` (15 s by default).
IDLE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SseMessage:
    """One dispatched Server-Sent Event."""

    event: str
    data: str
    id: str | None


@dataclass
class SseDecoder:
    """Lines of an event stream in, events out (the parts of the WHATWG rules a client of our
    streams needs: `event`, `data`, `id`, comments, blank-line dispatch)."""

    event: str = ""
    data: list[str] = field(default_factory=list)
    id: str | None = None

    def line(self, text: str) -> SseMessage | None:
        """Feed one line (without its end); the event it completes, if any."""
        if text == "":
            message = None
            if self.data:
                message = SseMessage(self.event or "message", "\n".join(self.data), self.id)
            self.event, self.data = "", []
            return message
        name, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id" and "\x00" not in value:
            self.id = value
        return None  # a comment (heartbeat), `retry:`, or a field we do not use


@dataclass
class StreamState:
    """Where one `stream()` is: which route it reads, the last event's id, whether it ended."""

    kind: str | None
    ident: str
    last_id: str | None = None
    ended: bool = False
    decoder: SseDecoder = field(default_factory=SseDecoder)

    @classmethod
    def of(cls, target: Target, since: str | None) -> StreamState:
        """The state of a new stream of `target`, resuming after `since` when given."""
        kind, ident = target_of(target)
        return cls(kind, ident, since)

    def call(self) -> Call:
        """The request that opens (or reopens) the stream; a bare id tries the job route."""
        route = "batches" if self.kind == "batch" else "jobs"
        headers = {"Accept": EVENT_STREAM}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        segment = urllib.parse.quote(self.ident, safe="")
        return Call("GET", f"{API}/{route}/{segment}/events", headers=headers)

    def opened(self) -> None:
        """The server accepted the request: the route is right, read from a clean slate."""
        self.kind = self.kind or "job"
        self.decoder = SseDecoder()

    def refused(self, response: httpx.Response, policy: RetryPolicy, attempt: int) -> float:
        """After an error reply (its body read): seconds before trying again, 0 to try the
        batch route at once for an id that is no job's; raises the error when it is final."""
        if response.status_code == 404 and self.kind is None:
            self.kind = "batch"
            return 0.0
        delay = policy.after_reply(response, attempt)
        if delay is not None:
            return delay
        error = error_from(response)
        if response.status_code == 404 and self.kind == "batch" and self.last_id is None:
            raise JobNotFound(f"no job or batch {self.ident!r}") from error
        raise error

    def take(self, line: str) -> StreamEvent | None:
        """Feed one line of the stream; the event it completes, if it is a job's event."""
        message = self.decoder.line(line)
        if message is None:
            return None
        if message.event == EVENT_END:
            self.ended = True
            return None
        if message.event != EVENT_JOB or message.id is None:
            return None
        try:
            data = json.loads(message.data)
        except ValueError as exc:
            raise SemantestError(f"unreadable event {message.id}: {exc}") from None
        batch = {"batchId": self.ident} if self.kind == "batch" else {}
        event = StreamEvent.model_validate(
            known_fields(StreamEvent, {**data, "id": message.id, **batch})
        )
        self.last_id = message.id
        return event


def stream_timeout(base: httpx.Timeout, idle_timeout: float) -> httpx.Timeout:
    """The client's timeouts, with reads allowed to wait `idle_timeout` for the next byte."""
    return httpx.Timeout(connect=base.connect, read=idle_timeout, write=base.write, pool=base.pool)


class StreamClosed(httpx.TransportError):
    """The server closed an event stream before its `end` (it restarted): reopen it."""
