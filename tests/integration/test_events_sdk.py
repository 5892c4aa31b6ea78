"""`Client.stream()` and `AsyncClient.stream()` against a real controller and redis-server.

Events are written the way agents write them (`JobStore.update`). A dropped connection is a
real one: the clients reach the controller through `Cuttable`, a TCP relay the test cuts, so
the client sees its socket die mid-stream and must reopen it with `Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis.asyncio import Redis

import semantest
from semantest.config import Settings
from semantest.errors import JobNotFound
from semantest.jobstore import JobStore
from semantest.live import StreamEvent
from semantest.models import JobStatus
from tests.conftest import ADMIN_KEY, serve_controller
from tests.integration.test_events import entries, settings_on, step

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = settings_on(redis_url, 32, tmp_path_factory.mktemp("sdk"))
    redis.Redis.from_url(settings.redis_url or "").flushdb()
    with serve_controller(settings):
        yield settings


@pytest.fixture
async def store(live: Settings) -> AsyncIterator[JobStore]:
    client = Redis.from_url(live.redis_url or "")
    yield JobStore(client)
    await client.aclose()


class Cuttable:
    """A TCP relay to the controller whose connections can be cut, as a network drop would;
    it keeps the first bytes of each request so a test can read the headers sent."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [downstream, upstream]
            threading.Thread(target=self._pump, args=(downstream, upstream, True)).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, False)).start()

    def _pump(self, src: socket.socket, dst: socket.socket, request: bool) -> None:
        first = request
        try:
            while chunk := src.recv(65536):
                if first:
                    self.requests.append(chunk)
                    first = False
                dst.sendall(chunk)
        except OSError:
            pass
        for s in (src, dst):
            s.close()

    def cut(self) -> None:
        """Drop every open connection."""
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.sockets.clear()

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def relay(live: Settings) -> Iterator[Cuttable]:
    relay = Cuttable(live.port)
    yield relay
    relay.close()


async def submit_job(live: Settings) -> str:
    async with semantest.AsyncClient(live.controller_url, ADMIN_KEY) as client:
        return (await client.generate("an sdk kite")).job_id


async def test_client_stream_yields_typed_events_until_final(
    live: Settings, store: JobStore
) -> None:
    job_id = await submit_job(live)
    await step(store, job_id, JobStatus.RUNNING, 50)
    await step(store, job_id, JobStatus.SUCCEEDED, 100)

    def follow() -> list[StreamEvent]:
        with semantest.Client(live.controller_url, ADMIN_KEY) as client:
            return list(client.stream(job_id))

    events = await asyncio.to_thread(follow)
    assert all(isinstance(e, StreamEvent) and e.batch_id is None for e in events)
    assert [e.status for e in events] == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED]
    assert [e.id for e in events] == entries(live, job_id)


async def test_a_dropped_connection_is_reopened_with_the_last_event_id(
    live: Settings, store: JobStore, relay: Cuttable
) -> None:
    job_id = await submit_job(live)
    first_seen = threading.Event()

    def follow() -> list[StreamEvent]:
        got: list[StreamEvent] = []
        with semantest.Client(relay.url, ADMIN_KEY) as client:
            for event in client.stream(job_id):
                got.append(event)
                if len(got) == 1:
                    relay.cut()  # the network drops right after the first event
                    first_seen.set()
        return got

    reader = asyncio.create_task(asyncio.to_thread(follow))
    assert await asyncio.to_thread(first_seen.wait, 10)
    for progress in (20, 40, 60):
        await step(store, job_id, JobStatus.RUNNING, progress)
    await step(store, job_id, JobStatus.SUCCEEDED, 100)
    events = await asyncio.wait_for(reader, 20)
    assert [e.progress for e in events] == [0, 20, 40, 60, 100]
    assert [e.id for e in events] == entries(live, job_id)  # none missed, none twice
    reopened = [r for r in relay.requests if b"last-event-id" in r.lower()]
    assert reopened and f"Last-Event-ID: {events[0].id}".encode() in reopened[0]


async def test_async_stream_of_a_batch_by_its_bare_id_and_since(
    live: Settings, store: JobStore
) -> None:
    async with semantest.AsyncClient(live.controller_url, ADMIN_KEY) as client:
        accepted = await client.batch(["sdk a", "sdk b"])
        async with contextlib.aclosing(client.stream(accepted.batch_id)) as events:
            first = [e async for e in _take(events, 2)]
        for job_id in accepted.job_ids:
            await step(store, job_id, JobStatus.FAILED, 100)
        rest = [e async for e in client.stream(accepted.batch_id, since=first[-1].id)]
        after_end = [e async for e in client.stream(accepted, since=rest[-1].id)]
    assert {e.batch_id for e in first + rest} == {accepted.batch_id}
    assert [e.status for e in first] == [JobStatus.QUEUED, JobStatus.QUEUED]
    assert sorted(e.job_id for e in rest) == sorted(accepted.job_ids)
    assert {e.status for e in rest} == {JobStatus.FAILED}
    assert after_end == []  # resuming past the end: the server's 204, nothing more


async def _take(events: AsyncIterator[StreamEvent], n: int) -> AsyncIterator[StreamEvent]:
    async for event in events:
        yield event
        n -= 1
        if n == 0:
            return


async def test_an_unknown_id_is_job_not_found(live: Settings) -> None:
    client = semantest.Client(live.controller_url, ADMIN_KEY)
    with client, pytest.raises(JobNotFound, match="no job or batch 'nope'"):
        next(client.stream("nope"))
