"""Webhooks end to end: a real stack (controller, sandbox, an agent with Chromium, and the webhook
worker `semantest up` starts) posts signed events to a real receiver on loopback, which checks
them with the `standardwebhooks` package."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from semantest.stack import Stack
from semantest.tenants import new_webhook_secret
from tests.e2e.conftest import client, stack_settings, wait_final
from tests.webhook_receiver import Receiver, event_types

pytestmark = pytest.mark.e2e
SECRET = new_webhook_secret()


@pytest.fixture(scope="module")
def hook_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack on database 48 whose webhooks may reach loopback."""
    settings = stack_settings(
        redis_url,
        48,
        tmp_path_factory.mktemp("webhooks"),
        webhook_secret=SecretStr(SECRET),
        webhook_allow_private=True,
        webhook_backoff_s=1,
    )
    with Stack(settings, agents=1, slots=2) as running:
        yield running


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def api(hook_stack: Stack) -> Iterator[httpx.Client]:
    with client(hook_stack) as c:
        yield c


def test_a_generated_image_posts_one_signed_job_succeeded(
    api: httpx.Client, receiver: Receiver, hook_stack: Stack
) -> None:
    where = f"/one/{uuid.uuid4().hex[:8]}"
    body = {
        "prompt": f"a lighthouse {uuid.uuid4().hex[:6]}",
        "webhook": {"url": receiver.url(where)},
    }
    reply = api.post("/api/v1/images/generate", json=body)
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["jobId"]
    record = wait_final(api, job_id)
    assert record["status"] == "succeeded", record
    [got] = receiver.wait(where, 1)
    payload = got.verified(SECRET)
    assert got.headers["webhook-id"] == f"evt_{job_id}_succeeded"
    assert payload["type"] == "job.succeeded"
    data = payload["data"]
    assert data["id"] == job_id
    assert [i["sha256"] for i in data["images"]] == [i["sha256"] for i in record["images"]]
    assert [i["url"] for i in data["images"]] == [i["url"] for i in record["images"]]
    image = api.get(data["images"][0]["url"])
    assert image.status_code == 200
    time.sleep(1.0)
    assert len(receiver.at(where)) == 1
    attempts = api.get("/api/v1/webhooks/deliveries", params={"jobId": job_id}).json()
    assert [(a["outcome"], a["statusCode"]) for a in attempts["deliveries"]] == [("delivered", 200)]
    assert (hook_stack.logs_dir / "webhooks.log").exists()


def test_a_batch_posts_every_job_then_batch_completed(
    api: httpx.Client, receiver: Receiver
) -> None:
    where, tag = f"/batch/{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:6]
    body = {
        "prompts": [f"a kite {tag}", f"a boat {tag}", f"a kite {tag}"],
        "webhook": {"url": receiver.url(where)},
    }
    reply = api.post("/api/v1/images/batch", json=body)
    assert reply.status_code == 202, reply.text
    batch_id, job_ids = reply.json()["batchId"], reply.json()["jobIds"]
    got = receiver.wait(where, 4, timeout=90)
    time.sleep(1.0)
    got = receiver.at(where)
    assert sorted(event_types(got)) == ["batch.completed"] + ["job.succeeded"] * 3
    payloads = [r.verified(SECRET) for r in got]
    assert payloads[-1]["type"] == "batch.completed"  # after every job's own event
    summary = payloads[-1]["data"]
    assert (summary["batchId"], summary["status"], summary["counts"]["succeeded"]) == (
        batch_id,
        "completed",
        3,
    )
    assert sorted(j["id"] for j in summary["jobs"]) == sorted(job_ids)
    by_job = {p["data"]["id"]: p["data"] for p in payloads if p["type"] == "job.succeeded"}
    assert set(by_job) == set(job_ids)
    # the repeated prompt ran once: its follower carries the same image
    assert by_job[job_ids[0]]["images"][0]["sha256"] == by_job[job_ids[2]]["images"][0]["sha256"]
    assert {r.headers["webhook-id"] for r in got} == {
        *(f"evt_{j}_succeeded" for j in job_ids),
        f"evt_{batch_id}_completed",
    }
    assert json.loads(got[-1].body)["data"]["done"] is True
