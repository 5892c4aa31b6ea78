"""The bridge over a real loopback WebSocket, with a client speaking the extension's side of the
protocol (the wire contract of `extension_bridge/protocol.py`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect

from extension_bridge import protocol
from extension_bridge.protocol import JobProgress, JobRun
from extension_bridge.server import BridgeServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def bridge() -> AsyncIterator[BridgeServer]:
    server = BridgeServer()
    await server.start()
    yield server
    await server.close()


async def extension(bridge: BridgeServer) -> ClientConnection:
    conn = await connect(bridge.url)
    for message in (
        {"type": "hello", "extensionVersion": "t", "userScripts": True},
        {
            "type": "addon.ready",
            "tabId": 1,
            "url": "http://x/#a",
            "addonId": "s",
            "addonVersion": "1",
        },
        {
            "type": "addon.ready",
            "tabId": 2,
            "url": "http://x/#b",
            "addonId": "s",
            "addonVersion": "1",
        },
    ):
        await conn.send(json.dumps({**message, "id": "m", "protocol": 1}))
    await bridge.wait_for_tab(lambda r: r.tab_id == 2, 5)
    return conn


async def answer(conn: ClientConnection, *, progress_first: bool) -> dict[str, object]:
    """Play the addon: take one job.run, maybe report progress, then its result."""
    run = json.loads(await conn.recv())
    assert run["type"] == "job.run"
    if progress_first:
        await conn.send(
            json.dumps(
                {
                    "type": "job.progress",
                    "id": "p",
                    "protocol": 1,
                    "jobId": run["jobId"],
                    "progress": 50,
                    "stage": "waiting",
                }
            )
        )
    await conn.send(
        json.dumps(
            {
                "type": "job.result",
                "id": "r",
                "protocol": 1,
                "jobId": run["jobId"],
                "images": [{"url": "http://x/i.png"}],
            }
        )
    )
    return run  # type: ignore[no-any-return]


async def test_a_failing_progress_write_does_not_fail_other_jobs(bridge: BridgeServer) -> None:
    conn = await extension(bridge)

    async def broken(_msg: JobProgress) -> None:
        raise ConnectionError("redis is restarting")

    async def fine(_msg: JobProgress) -> None:
        return None

    # job 1 (tab 1) gets a progress message whose write fails; job 2 (tab 2) runs beside it
    job1 = asyncio.create_task(bridge.run_job(JobRun(tab_id=1, job_id="j1", prompt="a"), broken, 5))
    await answer(conn, progress_first=True)
    result1 = await job1
    job2 = asyncio.create_task(bridge.run_job(JobRun(tab_id=2, job_id="j2", prompt="b"), fine, 5))
    await answer(conn, progress_first=False)
    result2 = await job2
    assert result1.images[0].url == result2.images[0].url == "http://x/i.png"
    assert bridge.state.tabs.keys() == {1, 2}  # the socket stayed up
    await conn.close()


async def test_cancel_reaches_the_extension(bridge: BridgeServer) -> None:
    conn = await extension(bridge)
    await bridge.cancel_job(2, "j9", "deadline")
    frame = protocol.parse(await conn.recv())
    assert frame.type == "job.cancel"
    assert (frame.tab_id, frame.job_id, frame.reason) == (2, "j9", "deadline")  # type: ignore[union-attr]
    await conn.close()
