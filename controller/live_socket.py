"""The live WebSocket (`/api/v1/ws`): one connection follows any number of jobs and batches.

It carries the same events as the SSE routes (controller/routes/events.py), from the same
feeds (controller/live.py). Messages are JSON objects with a `type`:

    client → server                             server → client
    {"type": "auth", "key"}  (first, unless     {"type": "ready", "heartbeatS"}
      the upgrade had Authorization/X-API-Key)
    {"type": "subscribe", "jobId"|"batchId",    {"type": "subscribed", "jobId"|"batchId"}
      "since"?}                                 {"type": "event", "jobId", "batchId"?, "id",
                                                  "event": {JobEvent}}
                                                {"type": "end", "jobId", "status"} or
                                                  {"type": "end", "batchId", "counts"}
    {"type": "unsubscribe", "jobId"|"batchId"}  {"type": "unsubscribed", "jobId"|"batchId"}
    {"type": "ping"}                            {"type": "pong"}; and {"type": "ping"} every
                                                  `SEMANTEST_LIVE_HEARTBEAT_S`
                                                {"type": "error", "code", "message", "details",
                                                  "jobId"|"batchId"?, "retryAfterS"?}

`since` is an event's `id`: the subscription resumes after it. Subscribing to the same id again
restarts that subscription from its `since`. Another tenant's id, or an unknown one, answers an
error `NOT_FOUND` and the connection stays open; so does a bad message (`VALIDATION_ERROR`,
naming the field). Close codes: 4401 no credential within `AUTH_TIMEOUT_S`, or an unknown one;
4403 the credential lacks `jobs:read`; 1000 the client's own close; 1012 the server is
stopping (a server may drop the connection instead, 1006): reconnect and subscribe with `since`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Request, WebSocket
from pydantic import Field, TypeAdapter, model_validator
from pydantic import ValidationError as PydanticError
from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect

from controller.auth import Caller, authenticate, authority_of, forbidden, remember
from controller.live import Feed, LiveFeeds, Position
from controller.state import AppState
from semantest.errors import NotFound, SemantestError, Unauthorized, Unavailable, ValidationError
from semantest.live import EVENT_END
from semantest.models import CamelModel

log = logging.getLogger(__name__)

#: Seconds a WebSocket may take to send its `auth` message.
AUTH_TIMEOUT_S = 10.0
#: Jobs and batches one WebSocket follows at once (each holds a feed).
MAX_SUBSCRIPTIONS = 32
#: Messages waiting to be sent on one WebSocket; a slow reader holds back its feeds.
OUTBOX_SIZE = 256
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
#: "Service restart": the server is stopping.
CLOSE_RESTARTING = 1012


class Auth(CamelModel):
    """`{"type": "auth", "key"}`: the credential, when the upgrade request had none."""

    type: Literal["auth"]
    key: Annotated[str, Field(min_length=1, max_length=8192)]


class Target(CamelModel):
    """What a message names: one job or one batch."""

    job_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    batch_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Target:
        if (self.job_id is None) == (self.batch_id is None):
            raise ValueError("name exactly one of jobId and batchId")
        return self

    @property
    def named(self) -> dict[str, str]:
        """`{"jobId": id}` or `{"batchId": id}`, as answers name it."""
        return {"jobId": self.job_id} if self.job_id else {"batchId": str(self.batch_id)}

    @property
    def key(self) -> str:
        """The subscription's name on its socket."""
        return f"job:{self.job_id}" if self.job_id else f"batch:{self.batch_id}"


class Subscribe(Target):
    """`{"type": "subscribe", "jobId"|"batchId", "since"?}`."""

    type: Literal["subscribe"]
    since: Annotated[str, Field(max_length=200)] | None = None


class Unsubscribe(Target):
    """`{"type": "unsubscribe", "jobId"|"batchId"}`."""

    type: Literal["unsubscribe"]


class Ping(CamelModel):
    """`{"type": "ping"}`, answered with a pong."""

    type: Literal["ping"]


Message = Auth | Subscribe | Unsubscribe | Ping
_MESSAGES: TypeAdapter[Message] = TypeAdapter(Annotated[Message, Field(discriminator="type")])

#: The job ids a caller may follow for a target, and its batch id (tenant checks included).
Resolve = Callable[[AppState, Caller, Target], Awaitable[tuple[list[str], str | None]]]


def parse_message(text: str | None) -> Message:
    """A client message, or `ValidationError` naming each bad field."""
    try:
        return _MESSAGES.validate_json(text or "")
    except PydanticError as exc:
        problems = exc.errors()
        if any(p["type"] == "json_invalid" for p in problems):
            details = [{"field": "message", "reason": "send one JSON object per message"}]
        else:
            details = [
                {"field": ".".join(str(p) for p in e["loc"][1:]) or "type", "reason": e["msg"]}
                for e in problems
            ]
        raise ValidationError("invalid message", details) from None


def error_message(exc: SemantestError, **named: str) -> dict[str, Any]:
    """An `error` message; a missing job or batch is `NOT_FOUND` whichever it was."""
    code = NotFound.code if isinstance(exc, NotFound) else exc.code
    message: dict[str, Any] = {"type": "error", "code": code, "message": exc.message}
    message |= {"details": exc.details, **named}
    if isinstance(exc, Unavailable):
        message["retryAfterS"] = exc.retry_after_s
    return message


async def serve(websocket: WebSocket, state: AppState, feeds: LiveFeeds, resolve: Resolve) -> None:
    """Authenticate an accepted socket, then serve its subscriptions until it closes."""
    try:
        caller = await _authenticated(websocket, state)
    except (Unauthorized, ValidationError, TimeoutError) as exc:
        reason = exc.message if isinstance(exc, SemantestError) else "no auth message in time"
        await websocket.send_json(error_message(Unauthorized(reason)))
        await websocket.close(CLOSE_UNAUTHORIZED, reason[:120])
        return
    except SemantestError as exc:  # Forbidden
        await websocket.send_json(error_message(exc))
        await websocket.close(CLOSE_FORBIDDEN, exc.message[:120])
        return
    except WebSocketDisconnect:
        return
    await websocket.send_json({"type": "ready", "heartbeatS": feeds.heartbeat_s})
    await _Session(websocket, state, feeds, caller, resolve).run()


async def _authenticated(websocket: WebSocket, state: AppState) -> Caller:
    """The caller, from the upgrade's headers or else the first message, by the key check
    every route uses (controller/auth.py); then the `jobs:read` scope."""
    # The key check takes a Request: the upgrade's own scope, read as the HTTP request it was.
    request = Request({**websocket.scope, "type": "http"})
    if "authorization" in request.headers or "x-api-key" in request.headers:
        caller = await authenticate(request, state)
    else:
        async with asyncio.timeout(AUTH_TIMEOUT_S):
            frame = await websocket.receive()
        if frame["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(frame.get("code", 1000))
        message = parse_message(frame.get("text"))
        if not isinstance(message, Auth):
            raise Unauthorized('send {"type": "auth", "key": "<API key>"} first')
        caller = remember(request, await authority_of(request, state).caller(message.key))
    if "jobs:read" not in caller.scopes:
        raise forbidden(caller, "jobs:read")
    return caller


class _Session:
    """One authenticated socket: its reader (this task), a writer, a pinger, and one task per
    subscription, all feeding one outbox so that only the writer sends."""

    def __init__(
        self,
        websocket: WebSocket,
        state: AppState,
        feeds: LiveFeeds,
        caller: Caller,
        resolve: Resolve,
    ) -> None:
        self.websocket = websocket
        self.state = state
        self.feeds = feeds
        self.caller = caller
        self.resolve = resolve
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(OUTBOX_SIZE)
        self.following: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        helpers = [asyncio.create_task(self._write()), asyncio.create_task(self._ping())]
        reader = asyncio.create_task(self._read())
        stopping = asyncio.create_task(self.feeds.stopping.wait())
        try:
            await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks = [reader, stopping, *helpers, *self.following.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if stopping.done() and not stopping.cancelled():
            # the server is stopping: say so, so the client reconnects and resumes with `since`
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self.websocket.close(CLOSE_RESTARTING, "server restarting")

    async def _read(self) -> None:
        while True:
            frame = await self.websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            message: Message | None = None
            try:
                message = parse_message(frame.get("text"))
                if isinstance(message, Subscribe):
                    await self._subscribe(message)
                elif isinstance(message, Unsubscribe):
                    await self._unfollow(message.key)
                    await self.outbox.put({"type": "unsubscribed", **message.named})
                elif isinstance(message, Ping):
                    await self.outbox.put({"type": "pong"})
                else:
                    reason = "this connection is authenticated already"
                    raise ValidationError("unexpected auth", [{"field": "type", "reason": reason}])
            except SemantestError as exc:
                named = message.named if isinstance(message, Target) else {}
                await self.outbox.put(error_message(exc, **named))

    async def _subscribe(self, message: Subscribe) -> None:
        job_ids, batch_id = await self.resolve(self.state, self.caller, message)
        since = Position.parse(message.since, job_ids, "since") if message.since else None
        await self._unfollow(message.key)  # subscribing again restarts from `since`
        if len(self.following) >= MAX_SUBSCRIPTIONS:
            reason = f"at most {MAX_SUBSCRIPTIONS} at once; unsubscribe from one first"
            raise ValidationError("too many subscriptions", [{"field": "type", "reason": reason}])
        feed = await Feed.open(
            self.feeds, self.state.redis, job_ids, batch_id=batch_id, since=since
        )
        await self.outbox.put({"type": "subscribed", **message.named})
        self.following[message.key] = asyncio.create_task(self._follow(message, feed))

    async def _follow(self, target: Target, feed: Feed) -> None:
        batch = {"batchId": feed.batch_id} if feed.batch_id else {}
        try:
            async for item in feed.items():
                if item is None:
                    continue  # the socket's own pings keep it open
                event = item.event.model_dump(mode="json", by_alias=True)
                message = {"type": "event", "jobId": item.job_id, **batch, "id": item.id}
                await self.outbox.put(message | {"event": event})
            if feed.finished:
                await self.outbox.put({"type": EVENT_END, **feed.end_data()})
        except (RedisError, OSError) as exc:  # Redis stayed away longer than its client retries
            log.warning("live feed of %s ended: %r", target.key, exc)
            lost = Unavailable("the event stream was interrupted; subscribe again with since")
            await self.outbox.put(error_message(lost, **target.named))
        finally:
            await feed.close()
            if self.following.get(target.key) is asyncio.current_task():
                del self.following[target.key]

    async def _unfollow(self, key: str) -> None:
        task = self.following.pop(key, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _write(self) -> None:
        while True:
            message = await self.outbox.get()
            await self.websocket.send_text(json.dumps(message, separators=(",", ":")))

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self.feeds.heartbeat_s)
            await self.outbox.put({"type": "ping"})
