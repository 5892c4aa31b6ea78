"""Live progress with real agents: a job watched from queued to succeeded over SSE, a batch over
the WebSocket, the SDK's `stream()`, and `semantest watch --json` as a user runs it (controller,
Redis, an agent with Chromium and the extension, the sandbox provider)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.sync.client import connect

import semantest
from semantest import keys
from semantest.models import JobStatus
from semantest.stack import Stack
from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import job_events, submit

pytestmark = pytest.mark.e2e

SEMANTEST = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "semantest")
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def stream_ids(stack: Stack, job_id: str) -> list[str]:
    """The entry ids of the job's event stream, as the agent wrote it."""
    r = redis.Redis.from_url(stack.settings.redis_url or "")
    try:
        return [i.decode() for i, _ in r.xrange(keys.job_events(job_id))]
    finally:
        r.close()


def test_a_job_over_sse_from_queued_to_succeeded(stack: Stack, api: httpx.Client) -> None:
    job_id = submit(api, f"a watched lighthouse {uuid.uuid4().hex[:6]}")
    events: list[dict[str, Any]] = []
    ids: list[str] = []
    end: dict[str, Any] | None = None
    with api.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=60) as response:
        assert response.status_code == 200
        name, data, event_id = "", "", ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
            elif line.startswith("id: "):
                event_id = line.removeprefix("id: ")
            elif line == "" and data:
                if name == "end":
                    end = json.loads(data)
                    break
                events.append(json.loads(data))
                ids.append(event_id)
                data = ""
    statuses = [e["status"] for e in events]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded"
    assert "running" in statuses and events[-1]["progress"] == 100
    assert any(e["detail"].get("agent") for e in events)  # written by the agent's attempt
    assert ids == stream_ids(stack, job_id)
    assert events == job_events(stack, job_id)
    assert end == {"jobId": job_id, "status": "succeeded"}


def test_a_batch_over_the_websocket(stack: Stack, api: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:6]
    reply = api.post(
        "/api/v1/images/batch", json={"prompts": [f"ws heron {tag}", f"ws wren {tag}"]}
    )
    batch_id, job_ids = reply.json()["batchId"], reply.json()["jobIds"]
    url = stack.url.replace("http://", "ws://") + "/api/v1/ws"
    messages: list[dict[str, Any]] = []
    with connect(url) as ws:
        ws.send(json.dumps({"type": "auth", "key": ADMIN_KEY}))
        assert json.loads(ws.recv(10))["type"] == "ready"
        ws.send(json.dumps({"type": "subscribe", "batchId": batch_id}))
        while True:
            message = json.loads(ws.recv(60))
            if message["type"] == "end":
                break
            messages.append(message)
    assert messages[0] == {"type": "subscribed", "batchId": batch_id}
    events = [m for m in messages if m["type"] == "event"]
    for job_id in job_ids:
        mine = [m for m in events if m["jobId"] == job_id]
        assert [m["id"] for m in mine] == [f"{job_id}:{i}" for i in stream_ids(stack, job_id)]
        assert mine[0]["event"]["status"] == "queued"
        assert mine[-1]["event"]["status"] == "succeeded"
    assert message == {"type": "end", "batchId": batch_id, "counts": {"succeeded": 2}}


def test_the_sdk_streams_a_job_to_its_result(stack: Stack) -> None:
    with semantest.Client(stack.url, ADMIN_KEY) as client:
        accepted = client.generate(f"an sdk-streamed kite {uuid.uuid4().hex[:6]}")
        events = list(client.stream(accepted))
        record = client.status(accepted.job_id)
    assert events[0].status is JobStatus.QUEUED and events[-1].status is JobStatus.SUCCEEDED
    progress = [e.progress for e in events]
    assert progress == sorted(progress) and progress[-1] == 100
    assert [e.id for e in events] == stream_ids(stack, accepted.job_id)
    assert record.status is JobStatus.SUCCEEDED and record.images


def test_semantest_watch_json_prints_one_event_a_line(stack: Stack, api: httpx.Client) -> None:
    job_id = submit(api, f"a cli-watched otter {uuid.uuid4().hex[:6]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMANTEST_")}
    env |= {"SEMANTEST_URL": stack.url, "SEMANTEST_API_KEY": ADMIN_KEY, "NO_COLOR": "1"}
    done = subprocess.run(
        [SEMANTEST, "watch", job_id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["id"] for line in lines] == stream_ids(stack, job_id)
    assert {line["jobId"] for line in lines} == {job_id}
    assert lines[0]["status"] == "queued" and lines[-1]["status"] == "succeeded"
    human = subprocess.run(
        [SEMANTEST, "watch", job_id], env=env, capture_output=True, text=True, timeout=60
    )
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines()[-1].split()[1:4] == [job_id[:12], "succeeded", "100%"]
