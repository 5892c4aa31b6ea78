"""Live progress over the WebSocket `/api/v1/ws`, against a real controller and redis-server.

Events are written the way agents write them (`JobStore.update`) and read over a real
WebSocket; the controller is test_events.py's (its own Redis database, a short heartbeat).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from semantest.config import Settings
from semantest.jobstore import JobStore
from semantest.models import JobRecord, JobStatus
from tests.conftest import ADMIN_KEY
from tests.integration.test_events import (  # the controller and helpers of the SSE tests
    AUTH,
    HEARTBEAT_S,
    api,
    entries,
    live,
    step,
    store,
    submit,
)

pytestmark = pytest.mark.integration
__all__ = ["api", "live", "store"]  # fixtures, shared with test_events.py


def ws_url(live: Settings) -> str:
    return live.controller_url.replace("http://", "ws://") + "/api/v1/ws"


async def receive(ws: ClientConnection, *types: str) -> dict[str, Any]:
    """The next message of one of `types` (pings skipped unless asked for)."""
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if message["type"] in types:
            return message
        assert message["type"] == "ping", message


async def test_ws_with_a_header_follows_a_job_to_its_end(
    api: httpx.AsyncClient, store: JobStore, live: Settings
) -> None:
    job_id = await submit(api)
    async with connect(ws_url(live), additional_headers=AUTH) as ws:
        assert (await receive(ws, "ready"))["heartbeatS"] == HEARTBEAT_S
        await ws.send(json.dumps({"type": "subscribe", "jobId": job_id}))
        assert await receive(ws, "subscribed") == {"type": "subscribed", "jobId": job_id}
        first = await receive(ws, "event")
        await step(store, job_id, JobStatus.RUNNING, 50)
        await step(store, job_id, JobStatus.SUCCEEDED, 100)
        second, third = await receive(ws, "event"), await receive(ws, "event")
        end = await receive(ws, "end")
    got = [first, second, third]
    assert [m["event"]["status"] for m in got] == ["queued", "running", "succeeded"]
    assert [m["id"] for m in got] == entries(live, job_id)
    assert all(m["jobId"] == job_id and "batchId" not in m for m in got)
    assert end == {"type": "end", "jobId": job_id, "status": "succeeded"}


async def test_ws_auth_message_batch_since_resumes_exactly(
    api: httpx.AsyncClient, store: JobStore, live: Settings
) -> None:
    reply = await api.post("/api/v1/images/batch", json={"prompts": ["w1", "w2"]})
    batch_id, job_ids = reply.json()["batchId"], reply.json()["jobIds"]
    async with connect(ws_url(live)) as ws:
        await ws.send(json.dumps({"type": "auth", "key": ADMIN_KEY}))
        await receive(ws, "ready")
        await ws.send(json.dumps({"type": "subscribe", "batchId": batch_id}))
        await receive(ws, "subscribed")
        seen = [await receive(ws, "event"), await receive(ws, "event")]  # both queued
    await step(store, job_ids[1], JobStatus.RUNNING, 20)
    await step(store, job_ids[0], JobStatus.SUCCEEDED, 100)
    await step(store, job_ids[1], JobStatus.SUCCEEDED, 100)
    async with connect(ws_url(live), additional_headers=AUTH) as ws:
        await receive(ws, "ready")
        since = seen[-1]["id"]
        await ws.send(json.dumps({"type": "subscribe", "batchId": batch_id, "since": since}))
        await receive(ws, "subscribed")
        missed = [await receive(ws, "event") for _ in range(3)]
        end = await receive(ws, "end")
    assert {m["event"]["status"] for m in seen} == {"queued"}
    # the three written meanwhile, each once, in the merged order (entry id, then job id)
    later = [(e, j) for j in job_ids for e in entries(live, j)[1:]]
    merged = sorted(later, key=lambda ej: (*map(int, ej[0].split("-")), ej[1]))
    assert [m["id"] for m in missed] == [f"{j}:{e}" for e, j in merged]
    by_job = {j: [m["event"]["status"] for m in missed if m["jobId"] == j] for j in job_ids}
    assert by_job == {job_ids[0]: ["succeeded"], job_ids[1]: ["running", "succeeded"]}
    assert all(m["batchId"] == batch_id for m in missed)
    assert end == {"type": "end", "batchId": batch_id, "counts": {"succeeded": 2}}


async def test_ws_another_tenants_job_is_not_found_and_the_socket_stays(
    api: httpx.AsyncClient, store: JobStore, live: Settings
) -> None:
    theirs = JobRecord(tenant="other", provider="sandbox", prompt="not yours")
    await store.create(theirs)
    async with connect(ws_url(live), additional_headers=AUTH) as ws:
        await receive(ws, "ready")
        for target in ({"jobId": theirs.id}, {"jobId": "nope"}, {"batchId": "nope"}):
            await ws.send(json.dumps({"type": "subscribe", **target}))
            error = await receive(ws, "error")
            assert error["code"] == "NOT_FOUND" and {**error, **target} == error
        await ws.send(json.dumps({"type": "subscribe"}))
        bad = await receive(ws, "error")
        assert bad["code"] == "VALIDATION_ERROR"
        await ws.send("not json")
        assert (await receive(ws, "error"))["details"][0]["field"] == "message"
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws, "pong") == {"type": "pong"}
        assert (await receive(ws, "ping")) == {"type": "ping"}  # the server's own, on time


@pytest.mark.parametrize(
    "first",
    [
        {"type": "auth", "key": "sk_nope_000000000000"},
        {"type": "subscribe", "jobId": "x"},
    ],
)
async def test_ws_without_a_valid_key_is_closed_4401(live: Settings, first: Any) -> None:
    async with connect(ws_url(live)) as ws:
        await ws.send(json.dumps(first))
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["type"] == "error" and error["code"] == "UNAUTHORIZED"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_ws_with_a_wrong_header_is_closed_4401(live: Settings) -> None:
    headers = {"Authorization": "Bearer sk_nope_000000000000"}
    async with connect(ws_url(live), additional_headers=headers) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["code"] == "UNAUTHORIZED"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def make_key(api: httpx.AsyncClient, tenant: str, scopes: list[str]) -> str:
    """A new API key of `tenant` with `scopes`, made through the admin API."""
    reply = await api.post("/api/v1/admin/keys", json={"tenant": tenant, "scopes": scopes})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["key"])


async def test_a_key_without_jobs_read_gets_403_and_ws_4403(
    api: httpx.AsyncClient, live: Settings
) -> None:
    job_id = await submit(api)
    key = await make_key(api, "writer-only", ["jobs:write"])
    reply = await api.get(
        f"/api/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {key}"}
    )
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "FORBIDDEN"
    async with connect(ws_url(live)) as ws:
        await ws.send(json.dumps({"type": "auth", "key": key}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["code"] == "FORBIDDEN" and "jobs:read" in error["message"]
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_two_tenants_see_only_their_own_streams(
    api: httpx.AsyncClient, store: JobStore, live: Settings
) -> None:
    key = await make_key(api, "tenant-b", ["jobs:read", "jobs:write"])
    theirs = await submit(api)  # the admin tenant's job
    b = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=live.controller_url, headers=b, timeout=10) as tenant_b:
        mine = await submit(tenant_b, "tenant b's kite")
        refused = await tenant_b.get(f"/api/v1/jobs/{theirs}/events")
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "JOB_NOT_FOUND"
    async with connect(ws_url(live), additional_headers=b) as ws:
        await receive(ws, "ready")
        await ws.send(json.dumps({"type": "subscribe", "jobId": theirs}))
        assert (await receive(ws, "error"))["code"] == "NOT_FOUND"
        await ws.send(json.dumps({"type": "subscribe", "jobId": mine}))
        await receive(ws, "subscribed")
        await step(store, mine, JobStatus.SUCCEEDED, 100)
        events = [await receive(ws, "event"), await receive(ws, "event")]
        assert [m["event"]["status"] for m in events] == ["queued", "succeeded"]
        assert await receive(ws, "end") == {"type": "end", "jobId": mine, "status": "succeeded"}
