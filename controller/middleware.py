"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path).

`RequestContext` gives every request an id (a sane incoming `X-Request-ID` is kept), echoes it
in the response, and refuses bodies over the limit with `PAYLOAD_TOO_LARGE`: by `Content-Length`
before reading, and for chunked bodies (no length) by reading at most the limit first. No route
takes a list in its query, so a parameter given twice (`?jobId=a&jobId=b`) is refused with
`VALIDATION_ERROR` naming it, instead of silently using one of the values.
"""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from semantest.errors import PayloadTooLarge, SemantestError, ValidationError
from semantest.logs import bind

_RID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_BODY_BYTES = 1024 * 1024


class RequestContext:
    """Request ids and the body size limit."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _RID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        bind(request_id=rid)  # every log line of this request's task carries it
        raw_id = rid.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", raw_id))
            await send(message)

        async def refuse(err: SemantestError) -> None:
            body = json.dumps(err.envelope(rid)).encode()
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": err.status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})

        async def too_large() -> None:
            await refuse(PayloadTooLarge(f"request body over {self.max_body} bytes"))

        repeated = _repeated(scope.get("query_string", b""))
        if repeated:
            await refuse(
                ValidationError(
                    f"query parameter {repeated!r} given more than once",
                    [{"field": repeated, "reason": "given more than once"}],
                )
            )
            return

        length = headers.get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_body:
                await too_large()
                return
            await self.app(scope, receive, send_with_id)
            return
        buffered = await self._read_chunked(receive)
        if buffered is None:
            await too_large()
            return

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send_with_id)

    async def _read_chunked(self, receive: Receive) -> list[Message] | None:
        """A body without a length, read up to the limit: its messages, or None when over."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away: let the app see it
                return messages
            size += len(message.get("body", b""))
            if size > self.max_body:
                return None
            if not message.get("more_body", False):
                return messages


def _repeated(query: bytes) -> str | None:
    """The first query parameter named twice, if any."""
    if b"&" not in query:
        return None
    seen: set[str] = set()
    for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return name
        seen.add(name)
    return None
