"""Live progress: a job's or a batch's events as Server-Sent Events, and the WebSocket `/ws`.

Both serve the job event streams the agents write, through the feeds of controller/live.py;
the SSE wire format is in semantest/live.py, the WebSocket's protocol in
controller/live_socket.py. An SSE stream starts with `retry:` (how long an EventSource waits
before reconnecting), sends heartbeat comments while quiet, and ends with an `end` event when
the job, or every job of the batch, is final. A request whose `Last-Event-ID` is at or past the
end answers 204, which tells an EventSource to stop reconnecting.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response, WebSocket
from fastapi.responses import StreamingResponse

from controller.auth import Caller, JobsRead
from controller.live import Feed, LiveFeeds, Position
from controller.live_socket import Target, serve
from controller.openapi import responses, success
from controller.routes.batches import load_batch
from controller.state import AppState, State
from semantest.errors import JobNotFound
from semantest.live import EVENT_END, EVENT_JOB, EVENT_STREAM


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.semantest
    settings = state.settings
    assert settings.redis_url is not None  # the app's own lifespan checked it
    feeds = LiveFeeds(settings.redis_url, settings.live_streams_max, settings.live_heartbeat_s)
    app.state.live = feeds
    with feeds.stop_on_signals():
        try:
            yield
        finally:
            await feeds.close()


router = APIRouter(tags=["events"], lifespan=_lifespan)

#: What an EventSource waits before reconnecting (ms), sent first on every stream.
SSE_RETRY_MS = 2000


def _feeds(request: Request) -> LiveFeeds:
    feeds: LiveFeeds = request.app.state.live
    return feeds


Feeds = Annotated[LiveFeeds, Depends(_feeds)]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=200,
        description="Resume after this event: the `id` of the last event received.",
    ),
]

_STREAM_EXAMPLE = (
    f"retry: {SSE_RETRY_MS}\n\n"
    "id: 1764070000000-0\nevent: job\n"
    'data: {"jobId":"0123abcd","status":"running","progress":40,"stage":"waiting",'
    '"at":1764070000.0,"detail":{}}\n\n'
    ": heartbeat\n\n"
    'event: end\ndata: {"jobId":"0123abcd","status":"succeeded"}\n\n'
)
#: One event of the stream (OpenAPI before 3.2 describes a stream's events one at a time).
_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": [EVENT_JOB, EVENT_END]},
        "id": {"type": "string", "description": "Send it back as `Last-Event-ID` to resume."},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "job: the JobEvent; end: `{jobId, status}` or `{batchId, counts}`.",
        },
        "retry": {"type": "integer"},
    },
    "required": ["event", "data"],
}
_SSE_ANSWERS = success(
    200,
    _STREAM_EXAMPLE,
    description="The events, then `end` once final; comments are heartbeats.",
    media_type=EVENT_STREAM,
    schema=_EVENT_SCHEMA,
) | {204: {"description": "`Last-Event-ID` is at or past the end: nothing more will come."}}


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses=_SSE_ANSWERS | responses(401, 403, 404, 422, 503, example_code="JOB_NOT_FOUND"),
)
async def job_events(
    job_id: str, caller: JobsRead, state: State, feeds: Feeds, last_event_id: LastEventId = None
) -> Response:
    """The job's events as Server-Sent Events, from its first (or after `Last-Event-ID`) until
    it is final; event ids are the job stream's entry ids."""
    await _own_job(state, caller, job_id)
    since = Position.parse(last_event_id, [job_id], "Last-Event-ID") if last_event_id else None
    feed = await Feed.open(feeds, state.redis, [job_id], since=since)
    return _event_stream(feed, resumed=since is not None)


@router.get(
    "/batches/{batch_id}/events",
    response_class=StreamingResponse,
    responses=_SSE_ANSWERS | responses(401, 403, 404, 422, 503),
)
async def batch_events(
    batch_id: str, caller: JobsRead, state: State, feeds: Feeds, last_event_id: LastEventId = None
) -> Response:
    """Every job's events of the batch as Server-Sent Events, in one order, until all are
    final; event ids are `<jobId>:<entry id>`, and `Last-Event-ID` resumes every job's stream
    after the last event received."""
    job_ids = await _batch_jobs(state, caller, batch_id)
    since = Position.parse(last_event_id, job_ids, "Last-Event-ID") if last_event_id else None
    feed = await Feed.open(feeds, state.redis, job_ids, batch_id=batch_id, since=since)
    return _event_stream(feed, resumed=since is not None)


async def _own_job(state: AppState, caller: Caller, job_id: str) -> None:
    record = await state.jobs.get(job_id) if len(job_id) <= 64 else None
    if record is None or record.tenant != caller.tenant:
        raise JobNotFound(f"no job {job_id!r}")


async def _batch_jobs(state: AppState, caller: Caller, batch_id: str) -> list[str]:
    batch = await load_batch(state, caller.tenant, batch_id)
    return [str(i) for i in batch["jobIds"]]  # type: ignore[attr-defined]


async def followable(
    state: AppState, caller: Caller, target: Target
) -> tuple[list[str], str | None]:
    """The job ids a WebSocket subscription follows, and its batch id; `NotFound` for an id
    that is not the caller's tenant's."""
    if target.job_id is not None:
        await _own_job(state, caller, target.job_id)
        return [target.job_id], None
    batch_id = str(target.batch_id)
    return await _batch_jobs(state, caller, batch_id), batch_id


def _event_stream(feed: Feed, *, resumed: bool) -> Response:
    if resumed and feed.finished:
        return Response(status_code=204)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_sse(feed), media_type=EVENT_STREAM, headers=headers)


async def _sse(feed: Feed) -> AsyncIterator[bytes]:
    try:
        yield f"retry: {SSE_RETRY_MS}\n\n".encode()
        async for item in feed.items():
            if item is None:
                yield b": heartbeat\n\n"
                continue
            data = item.event.model_dump_json(by_alias=True)
            yield f"id: {item.id}\nevent: {EVENT_JOB}\ndata: {data}\n\n".encode()
        if feed.finished:
            yield f"event: {EVENT_END}\ndata: {json.dumps(feed.end_data())}\n\n".encode()
    finally:
        await feed.close()


@router.websocket("/ws")
async def live_socket(websocket: WebSocket) -> None:
    """Follow jobs and batches over one connection (protocol: controller/live_socket.py)."""
    await websocket.accept()
    app = websocket.app  # request-typed dependencies do not resolve for a WebSocket
    await serve(websocket, app.state.semantest, app.state.live, followable)
