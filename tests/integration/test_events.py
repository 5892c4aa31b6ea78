"""Live progress over SSE, against a real controller and redis-server (the WebSocket:
test_events_ws.py, the SDK: test_events_sdk.py).

No agent runs here: events are written the way agents write them, through `JobStore.update`,
and read back over real HTTP and a real WebSocket. The controllers here have their own Redis
databases (30, 31) and a short heartbeat, so idle streams show heartbeats within a second.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr
from redis.asyncio import Redis

from semantest import keys
from semantest.config import Settings
from semantest.jobstore import JobStore
from semantest.models import JobRecord, JobStatus, Stage
from semantest.stack import free_port
from tests.conftest import ADMIN_KEY, serve_controller

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
HEARTBEAT_S = 0.3


def settings_on(redis_url: str, db: int, tmp: Any, **extra: Any) -> Settings:
    return Settings(
        redis_url=f"{redis_url.rsplit('/', 1)[0]}/{db}",
        admin_key=SecretStr(ADMIN_KEY),
        port=free_port(),
        data_dir=tmp,
        chromium=None,
        live_heartbeat_s=HEARTBEAT_S,
        **extra,
    )


@pytest.fixture(scope="module")
def live(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = settings_on(redis_url, 30, tmp_path_factory.mktemp("live"))
    redis.Redis.from_url(settings.redis_url or "").flushdb()
    with serve_controller(settings):
        yield settings


@pytest.fixture
async def api(live: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.controller_url, headers=AUTH, timeout=10) as c:
        yield c


@pytest.fixture
async def store(live: Settings) -> AsyncIterator[JobStore]:
    client = Redis.from_url(live.redis_url or "")
    yield JobStore(client)
    await client.aclose()


@dataclass
class Sse:
    """One SSE event as a client sees it (heartbeats are the comments)."""

    event: str = "message"
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


async def sse(response: httpx.Response) -> AsyncIterator[Sse]:
    """The events of a streamed SSE response; comment-only blocks come as events too."""
    current = Sse()
    seen = False
    async for line in response.aiter_lines():
        if line == "":
            if seen:
                yield current
            current, seen = Sse(), False
            continue
        seen = True
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            current.comments.append(value)
        elif name == "data":
            current.data = f"{current.data}\n{value}" if current.data else value
        elif name in ("event", "id"):
            setattr(current, name, value)


async def submit(api: httpx.AsyncClient, prompt: str = "a live kite") -> str:
    reply = await api.post("/api/v1/images/generate", json={"prompt": prompt})
    assert reply.status_code == 202, reply.text
    return str(reply.json()["jobId"])


async def step(store: JobStore, job_id: str, status: JobStatus, progress: int = 0) -> None:
    """What an agent's attempt writes: a status and progress, with its event."""

    def change(record: JobRecord) -> None:
        record.status, record.progress = status, progress
        record.stage = Stage.DONE if status.terminal else Stage.WAITING

    await store.update(job_id, change)


def entries(live: Settings, job_id: str) -> list[str]:
    """The entry ids of a job's stream, oldest first."""
    r = redis.Redis.from_url(live.redis_url or "")
    try:
        return [i.decode() for i, _ in r.xrange(keys.job_events(job_id))]
    finally:
        r.close()


async def read_until_end(
    response: httpx.Response, events: AsyncIterator[Sse] | None = None
) -> tuple[list[Sse], Sse | None]:
    """The job events up to the `end` event, and that (None if the stream ended without)."""
    got: list[Sse] = []
    async for item in events or sse(response):
        if item.event == "end":
            return got, item
        if item.event == "job":
            got.append(item)
    return got, None


# --- SSE: one job -------------------------------------------------------------------------------


async def test_a_job_from_queued_to_succeeded_then_end(
    api: httpx.AsyncClient, store: JobStore, live: Settings
) -> None:
    job_id = await submit(api)
    async with api.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = sse(response)
        first = await anext(events)
        while first.event != "job":
            first = await anext(events)
        assert first.json["status"] == "queued" and first.json["jobId"] == job_id
        await step(store, job_id, JobStatus.RUNNING, 40)
        await step(store, job_id, JobStatus.SUCCEEDED, 100)
        rest, end = await read_until_end(response, events)
    got = [first, *rest]
    assert [e.json["status"] for e in got] == ["queued", "running", "succeeded"]
    assert [e.json["progress"] for e in got] == [0, 40, 100]
    assert [e.id for e in got] == entries(live, job_id)  # ids are the stream's entry ids
    assert end is not None and end.json == {"jobId": job_id, "status": "succeeded"}


async def test_reconnecting_with_last_event_id_gets_exactly_the_missed_events(
    api: httpx.AsyncClient, store: JobStore, live: Settings
) -> None:
    job_id = await submit(api)
    await step(store, job_id, JobStatus.RUNNING, 10)
    async with api.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        seen = [e async for e in _first_jobs(response, 2)]
    for progress in (30, 60, 90):  # while the client is away
        await step(store, job_id, JobStatus.RUNNING, progress)
    await step(store, job_id, JobStatus.FAILED, 90)
    headers = {"Last-Event-ID": seen[-1].id or ""}
    async with api.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers) as response:
        missed, end = await read_until_end(response)
    assert [e.json["progress"] for e in seen + missed] == [0, 10, 30, 60, 90, 90]
    assert [e.id for e in seen + missed] == entries(live, job_id)
    assert end is not None and end.json["status"] == "failed"
    # past the end: 204, which stops an EventSource from reconnecting
    headers = {"Last-Event-ID": missed[-1].id or ""}
    after = await api.get(f"/api/v1/jobs/{job_id}/events", headers=headers)
    assert after.status_code == 204 and after.content == b""


async def _first_jobs(response: httpx.Response, n: int) -> AsyncIterator[Sse]:
    count = 0
    async for item in sse(response):
        if item.event == "job":
            yield item
            count += 1
            if count == n:
                return


async def test_an_idle_stream_sends_heartbeats(api: httpx.AsyncClient) -> None:
    job_id = await submit(api)
    async with api.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        beats = 0
        async with asyncio.timeout(5 * HEARTBEAT_S + 2):
            async for item in sse(response):
                beats += "heartbeat" in item.comments
                if beats == 2:
                    break
    assert beats == 2


async def test_a_finished_job_streams_its_history_and_ends(
    api: httpx.AsyncClient, store: JobStore
) -> None:
    job_id = await submit(api)
    await step(store, job_id, JobStatus.CANCELED)
    async with api.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        events, end = await read_until_end(response)
    assert [e.json["status"] for e in events] == ["queued", "canceled"]
    assert end is not None and end.json == {"jobId": job_id, "status": "canceled"}


# --- SSE: a batch -------------------------------------------------------------------------------


async def test_a_batch_resumed_at_random_points_loses_and_repeats_nothing(
    api: httpx.AsyncClient, store: JobStore, live: Settings
) -> None:
    """Four jobs written concurrently, ~60 events; the client drops the connection after
    every few events and resumes with its last id: it gets every entry of every stream once,
    in the one merged order."""
    reply = await api.post("/api/v1/images/batch", json={"prompts": [f"b{i}" for i in range(4)]})
    batch_id, job_ids = reply.json()["batchId"], reply.json()["jobIds"]
    rng = random.Random(7)

    async def agent(job_id: str) -> None:
        for progress in range(5, 100, 7):
            await step(store, job_id, JobStatus.RUNNING, progress)
            await asyncio.sleep(rng.random() / 200)
        await step(store, job_id, rng.choice([JobStatus.SUCCEEDED, JobStatus.FAILED]), 100)

    writers = asyncio.gather(*(agent(j) for j in job_ids))
    got: list[Sse] = []
    end: Sse | None = None
    ended = False
    while not ended:
        headers = {"Last-Event-ID": got[-1].id or ""} if got else {}
        url = f"/api/v1/batches/{batch_id}/events"
        async with api.stream("GET", url, headers=headers) as response:
            if response.status_code == 204:  # it left right after the last job's final event
                break
            assert response.status_code == 200, await response.aread()
            keep = rng.randint(1, 6)
            async for item in sse(response):
                if item.event == "end":
                    end, ended = item, True
                    break
                if item.event == "job":
                    got.append(item)
                    keep -= 1
                    if keep == 0:
                        break
    await writers
    expected = sorted(
        (int(e.split("-")[0]), int(e.split("-")[1]), j) for j in job_ids for e in entries(live, j)
    )
    received = []
    for item in got:
        job_id, _, entry_id = (item.id or "").rpartition(":")
        assert item.json["jobId"] == job_id
        ms, seq = entry_id.split("-")
        received.append((int(ms), int(seq), job_id))
    assert received == expected  # every entry once, in the merged order
    if end is not None:
        assert end.json["batchId"] == batch_id and sum(end.json["counts"].values()) == 4


async def test_batch_events_of_other_tenants_and_unknown_ids_are_404(
    api: httpx.AsyncClient, store: JobStore, live: Settings
) -> None:
    theirs = JobRecord(tenant="other", provider="sandbox", prompt="not yours")
    await store.create(theirs)
    r = redis.Redis.from_url(live.redis_url or "")
    r.set(keys.batch("b-other"), json.dumps({"id": "b-other", "tenant": "other", "jobIds": []}))
    r.close()
    for path, code in [
        (f"/api/v1/jobs/{theirs.id}/events", "JOB_NOT_FOUND"),
        ("/api/v1/jobs/nope/events", "JOB_NOT_FOUND"),
        ("/api/v1/batches/b-other/events", "NOT_FOUND"),
        ("/api/v1/batches/nope/events", "NOT_FOUND"),
    ]:
        reply = await api.get(path)
        assert reply.status_code == 404 and reply.json()["error"]["code"] == code, path


async def test_a_missing_or_unknown_key_is_401(live: Settings, api: httpx.AsyncClient) -> None:
    job_id = await submit(api)
    async with httpx.AsyncClient(base_url=live.controller_url, timeout=10) as anon:
        for headers in ({}, {"Authorization": "Bearer sk_nope_000000000000"}):
            reply = await anon.get(f"/api/v1/jobs/{job_id}/events", headers=headers)
            assert reply.status_code == 401, headers
            assert reply.json()["error"]["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize("bad", ["garbage", "1-2-3", "otherjob:1-0", ":1-0"])
async def test_a_last_event_id_not_of_this_stream_is_422(api: httpx.AsyncClient, bad: str) -> None:
    job_id = await submit(api)
    reply = await api.get(f"/api/v1/jobs/{job_id}/events", headers={"Last-Event-ID": bad})
    assert reply.status_code == 422
    assert reply.json()["error"]["details"][0]["field"] == "Last-Event-ID"


async def test_a_client_that_leaves_frees_its_redis_connection(
    api: httpx.AsyncClient, live: Settings
) -> None:
    job_id = await submit(api)
    r = redis.Redis.from_url(live.redis_url or "")

    def blocked() -> int:
        # clients blocked in a command (flag b) on this controller's database: its XREAD BLOCKs
        return sum(1 for c in r.client_list() if "b" in c["flags"] and c["db"] == "30")

    async with api.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        async for _item in sse(response):
            if blocked():
                break
    for _ in range(100):  # the server notices within a moment and gives the connection back
        if not blocked():
            break
        await asyncio.sleep(0.05)
    assert not blocked()
    r.close()


async def test_past_the_bound_a_stream_is_refused_with_503(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = settings_on(redis_url, 31, tmp_path_factory.mktemp("bound"), live_streams_max=1)
    with serve_controller(settings):
        async with httpx.AsyncClient(
            base_url=settings.controller_url, headers=AUTH, timeout=10
        ) as c:
            job_id = await submit(c)
            url = f"/api/v1/jobs/{job_id}/events"
            async with c.stream("GET", url) as first:
                assert first.status_code == 200
                refused = await c.get(url)
                assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
                assert refused.json()["error"]["code"] == "UNAVAILABLE"
            async with asyncio.timeout(5):  # the first one's slot is free once it left
                while True:
                    async with c.stream("GET", url) as again:
                        if again.status_code == 200:
                            break
                    await asyncio.sleep(0.05)
