"""One prompt from REST to a stored image through Redis, RQ, Chromium, the extension, the addon.

The bytes the API serves must be exactly the PNG the sandbox renders for the prompt.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import httpx
import pytest
import redis

from sandbox.render import render_png
from semantest import keys
from semantest.stack import Stack
from tests.e2e.conftest import wait_final

pytestmark = pytest.mark.e2e


def test_prompt_to_stored_image_bytes(api: httpx.Client, stack: Stack) -> None:
    prompt = f"a paper boat on a canal, {uuid.uuid4().hex[:8]}"
    accepted = api.post("/api/v1/images/generate", json={"prompt": prompt, "provider": "sandbox"})
    assert accepted.status_code == 202
    record = wait_final(api, accepted.json()["jobId"])
    assert record["status"] == "succeeded", record.get("error")
    assert record["progress"] == 100 and record["attempts"] == 1
    assert record["agent"].startswith("agent-1") and record["finishedAt"] >= record["startedAt"]
    (image,) = record["images"]
    expected = render_png(prompt)
    assert image["sha256"] == hashlib.sha256(expected).hexdigest()
    assert (image["width"], image["height"], image["contentType"]) == (512, 512, "image/png")
    assert image["bytes"] == len(expected)
    served = api.get(image["url"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert hashlib.sha256(served.content).hexdigest() == hashlib.sha256(expected).hexdigest()
    # and the file on disk is the same bytes, at its content address
    path = stack.settings.images_dir / image["key"]
    assert path.read_bytes() == expected


def test_consecutive_prompts_reuse_the_warm_slot(api: httpx.Client) -> None:
    prompts = [f"tile {i} {uuid.uuid4().hex[:6]}" for i in range(3)]
    ids = [api.post("/api/v1/images/generate", json={"prompt": p}).json()["jobId"] for p in prompts]
    for prompt, job_id in zip(prompts, ids, strict=True):
        record = wait_final(api, job_id)
        assert record["status"] == "succeeded", record.get("error")
        assert record["images"][0]["sha256"] == hashlib.sha256(render_png(prompt)).hexdigest()


def test_progress_events_are_recorded_in_order(api: httpx.Client, stack: Stack) -> None:
    job_id = api.post("/api/v1/images/generate", json={"prompt": "ordered events"}).json()["jobId"]
    assert wait_final(api, job_id)["status"] == "succeeded"
    r = redis.Redis.from_url(stack.settings.redis_url or "")
    events = [json.loads(f[b"event"]) for _id, f in r.xrange(keys.job_events(job_id))]
    statuses = [e["status"] for e in events]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded"
    assert statuses.index("leased") < statuses.index("running")
    stages = [e["stage"] for e in events]
    for stage in ("opening", "waiting", "storing", "done"):
        assert stage in stages
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 100
