"""An agent killed mid-job loses nothing: the job is re-queued, runs again, and is recorded once.

The agents here are real processes SIGKILLed while the sandbox is still answering. What finds
the orphaned job is RQ's own registry clean-up, which live agents run every minute once a job's
timeout has passed; the test runs that same clean-up with its cut-off set past that timeout
instead of waiting several minutes for it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from rq import Queue
from rq.registry import StartedJobRegistry

from sandbox.render import render_png
from semantest import keys
from semantest.config import Settings
from semantest.stack import Child, Stack
from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import stack_settings, wait_final

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def slow_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Its own Redis db and a sandbox that takes 3 s per reply, so a job can be caught running."""
    settings = stack_settings(
        redis_url,
        2,
        tmp_path_factory.mktemp("crash"),
        sandbox_latency_ms=3000,
        max_attempts=2,
        retry_backoff_s=[0],
    )
    with Stack(settings, agents=1) as running:
        yield running


def submit(stack: Stack, prompt: str) -> str:
    reply = httpx.post(
        f"{stack.url}/api/v1/images/generate",
        json={"prompt": prompt},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert reply.status_code == 202, reply.text
    job_id: str = reply.json()["jobId"]
    return job_id


def record_of(r: redis.Redis, job_id: str) -> dict[str, Any]:
    raw = r.get(keys.job(job_id))
    assert raw is not None
    record: dict[str, Any] = json.loads(raw)
    return record


def kill_while_waiting(
    stack: Stack, r: redis.Redis, job_id: str, agent: Child, attempt: int
) -> None:
    """SIGKILL `agent` once its `attempt` of `job_id` is waiting on the provider."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        record = record_of(r, job_id)
        if (record["stage"], record["attempts"]) == ("waiting", attempt) and record[
            "agent"
        ].startswith(agent.name + "/"):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"{agent.name} never ran {job_id}: {record_of(r, job_id)}")
    agent.proc.kill()
    agent.proc.wait(10)
    stack.children.remove(agent)


def clean_up_abandoned(r: redis.Redis, settings: Settings) -> None:
    """RQ's clean-up of the started registry, as a live agent's maintenance runs it."""
    # A SimpleWorker's execution entry lives for the RQ job timeout + 60 s from its start.
    past_timeout = time.time() + settings.job_timeout_s + keys.RQ_TIMEOUT_MARGIN_S + 60 + 1
    queue = Queue(keys.queue_name("sandbox", "normal"), connection=r)
    StartedJobRegistry(queue=queue).cleanup(timestamp=past_timeout)


def new_agent(stack: Stack, name: str) -> Child:
    return stack.spawn(name, [sys.executable, "-m", "agents", "--name", name])


def test_killed_agent_job_is_rerun_and_recorded_once(slow_stack: Stack) -> None:
    r = redis.Redis.from_url(slow_stack.settings.redis_url or "")
    prompt = f"a kite over dunes {uuid.uuid4().hex[:6]}"
    job_id = submit(slow_stack, prompt)
    kill_while_waiting(slow_stack, r, job_id, slow_stack.children[-1], attempt=1)
    assert record_of(r, job_id)["status"] == "running"  # nobody has noticed yet

    clean_up_abandoned(r, slow_stack.settings)
    record = record_of(r, job_id)
    assert record["status"] == "retrying"
    assert record["error"]["code"] == "AGENT_LOST" and record["error"]["retryable"] is True

    new_agent(slow_stack, "agent-2")
    with httpx.Client(
        base_url=slow_stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ) as api:
        final = wait_final(api, job_id, timeout=90)
    assert final["status"] == "succeeded", final.get("error")
    assert final["attempts"] == 2 and final["agent"].startswith("agent-2")
    assert final["error"] is None
    (image,) = final["images"]
    assert image["sha256"] == hashlib.sha256(render_png(prompt)).hexdigest()
    statuses = [json.loads(f[b"event"])["status"] for _id, f in r.xrange(keys.job_events(job_id))]
    assert statuses.count("succeeded") == 1 and "retrying" in statuses


def test_job_whose_last_attempt_dies_fails_with_agent_lost(slow_stack: Stack) -> None:
    r = redis.Redis.from_url(slow_stack.settings.redis_url or "")
    job_id = submit(slow_stack, f"a lantern {uuid.uuid4().hex[:6]}")
    for attempt, name in ((1, "agent-3"), (2, "agent-4")):  # max_attempts=2: both attempts die
        agent = next(c for c in slow_stack.children if c.name.startswith("agent"))
        kill_while_waiting(slow_stack, r, job_id, agent, attempt)
        new_agent(slow_stack, name)
        clean_up_abandoned(r, slow_stack.settings)
    record = record_of(r, job_id)
    assert record["status"] == "failed" and record["attempts"] == 2
    assert record["error"] == {
        "code": "AGENT_LOST",
        "message": "the agent running this job stopped before it finished",
        "retryable": False,
    }
    assert record["finishedAt"] is not None
    # nothing is left to run it a third time
    for lane in ("high", "normal", "low"):
        assert r.llen(keys.rq_queue_key(keys.queue_name("sandbox", lane))) == 0
