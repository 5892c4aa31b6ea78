"""Agents that die, freeze or overrun lose nothing: the lease reaper re-queues their jobs within
seconds, the retry policy bounds the attempts, RQ agrees with the record, and an attempt past
its deadline is cancelled and frees its slot.

The agents are real processes under the pool supervisor, SIGKILLed (or SIGSTOPped) while the
sandbox is still answering.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from agents.worker import CLAIM_ARGS, CLAIM_LUA, claim_keys
from sandbox.render import render_png
from semantest import keys
from semantest.stack import Stack
from tests.e2e.conftest import client, stack_settings, wait_final
from tests.e2e.conftest import submit as submit_to

pytestmark = pytest.mark.e2e

#: The longest a dead agent's job may wait before its next attempt starts.
RERUN_WITHIN_S = 20


@pytest.fixture(scope="module")
def slow_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two agents, a sandbox that takes 3 s per reply (so a job can be caught running)."""
    settings = stack_settings(
        redis_url,
        2,
        tmp_path_factory.mktemp("crash"),
        sandbox_latency_ms=3000,
        max_attempts=2,
        retry_backoff_s=[0],
    )
    with Stack(settings, agents=2) as running:
        yield running


@pytest.fixture
def r(slow_stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(slow_stack.settings.redis_url or "")
    yield client
    client.close()


def submit(stack: Stack, prompt: str) -> str:
    with client(stack) as api:
        return submit_to(api, prompt)


def record_of(r: redis.Redis, job_id: str) -> dict[str, Any]:
    raw = r.get(keys.job(job_id))
    assert raw is not None
    record: dict[str, Any] = json.loads(raw)
    return record


def agent_pids(stack: Stack) -> dict[str, int]:
    with client(stack) as api:
        return {a["id"]: a["pid"] for a in api.get("/api/v1/fleet").json()["agents"]}


def wait_for(r: redis.Redis, job_id: str, attempt: int, stages: tuple[str, ...]) -> dict[str, Any]:
    """The record once `attempt` of the job is at one of `stages`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        record = record_of(r, job_id)
        if record["attempts"] == attempt and record["stage"] in stages:
            return record
        time.sleep(0.05)
    raise AssertionError(f"attempt {attempt} of {job_id} never reached {stages}: {record}")


def kill_while_waiting(stack: Stack, r: redis.Redis, job_id: str, attempt: int) -> float:
    """SIGKILL the agent running `attempt` of `job_id` once it waits on the provider."""
    record = wait_for(r, job_id, attempt, ("waiting",))
    agent = record["agent"].split("/")[0]
    os.kill(agent_pids(stack)[agent], signal.SIGKILL)
    return time.monotonic()


def events(r: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    return [json.loads(f[b"event"]) for _id, f in r.xrange(keys.job_events(job_id))]


def rq_status_within(r: redis.Redis, job_id: str, wanted: JobStatus, seconds: float) -> Any:
    """RQ's status of the job once it is `wanted`, or whatever it is after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        status = Job.fetch(job_id, connection=r).get_status()
        if status == wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_killed_agent_job_is_rerun_within_20_s_and_recorded_once(
    slow_stack: Stack, r: redis.Redis
) -> None:
    prompt = f"a kite over dunes {uuid.uuid4().hex[:6]}"
    job_id = submit(slow_stack, prompt)
    killed_at = kill_while_waiting(slow_stack, r, job_id, attempt=1)
    wait_for(r, job_id, 2, ("opening", "typing", "waiting", "capturing", "storing", "done"))
    waited = time.monotonic() - killed_at
    print(f"dead agent's job re-run after {waited:.1f} s")
    assert waited <= RERUN_WITHIN_S

    with client(slow_stack) as api:
        final = wait_final(api, job_id, timeout=60)
    assert final["status"] == "succeeded", final.get("error")
    assert final["attempts"] == 2 and final["error"] is None and final["lease"] is None
    (image,) = final["images"]
    assert image["sha256"] == hashlib.sha256(render_png(prompt)).hexdigest()
    seen = events(r, job_id)
    assert [e["status"] for e in seen].count("succeeded") == 1
    assert {"status": "retrying", "error": "AGENT_LOST"} in [
        {"status": e["status"], "error": e["detail"].get("error")} for e in seen
    ]
    # RQ marks its job finished right after the attempt recorded the result
    assert rq_status_within(r, job_id, JobStatus.FINISHED, 5) == JobStatus.FINISHED


def test_job_whose_last_attempt_dies_fails_with_agent_lost_in_rq_too(
    slow_stack: Stack, r: redis.Redis
) -> None:
    job_id = submit(slow_stack, f"a lantern {uuid.uuid4().hex[:6]}")
    for attempt in (1, 2):  # max_attempts=2: both attempts die
        kill_while_waiting(slow_stack, r, job_id, attempt)
    with client(slow_stack) as api:
        record = wait_final(api, job_id, timeout=RERUN_WITHIN_S + 10)
    assert record["status"] == "failed" and record["attempts"] == 2
    assert record["error"] == {
        "code": "AGENT_LOST",
        "message": "the agent running this job stopped heart-beating",
        "retryable": False,
    }
    assert record["finishedAt"] is not None
    # RQ agrees: failed, in its failed registry, and nothing is left to run it a third time
    queue = Queue(keys.queue_name("sandbox", "normal"), connection=r)
    assert rq_status_within(r, job_id, JobStatus.FAILED, 5) == JobStatus.FAILED
    assert job_id in FailedJobRegistry(queue=queue)
    assert job_id not in ScheduledJobRegistry(queue=queue)
    assert job_id not in StartedJobRegistry(queue=queue)
    for lane in ("high", "normal", "low"):
        assert r.llen(keys.rq_queue_key(keys.queue_name("sandbox", lane))) == 0


def test_frozen_agent_is_replaced_and_its_late_write_is_refused(
    slow_stack: Stack, r: redis.Redis
) -> None:
    """SIGSTOP: the agent stops heart-beating but is not dead. Its job is re-run elsewhere; when
    it wakes up, its lease is stale and nothing it writes lands."""
    prompt = f"a frozen lake {uuid.uuid4().hex[:6]}"
    job_id = submit(slow_stack, prompt)
    record = wait_for(r, job_id, 1, ("waiting",))
    frozen_agent = record["agent"].split("/")[0]
    pid = agent_pids(slow_stack)[frozen_agent]
    os.kill(pid, signal.SIGSTOP)
    try:
        rerun = wait_for(r, job_id, 2, ("opening", "typing", "waiting", "capturing", "storing"))
        assert not rerun["agent"].startswith(frozen_agent + "/")
        with client(slow_stack) as api:
            final = wait_final(api, job_id, timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert final["status"] == "succeeded" and final["attempts"] == 2
    time.sleep(4)  # the woken agent finishes its stale attempt (3 s reply) and tries to write
    after = record_of(r, job_id)
    assert after["status"] == "succeeded" and after["agent"] == final["agent"]
    # Stored records keep keys; the API adds URLs when it serves one.
    assert after["images"] == [{**image, "url": None} for image in final["images"]]
    assert [e["status"] for e in events(r, job_id)].count("succeeded") == 1


def test_job_taken_by_an_agent_that_died_before_its_lease_is_requeued(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """RQ handed the job to a worker that died before writing the lease: no attempt was
    counted, yet the job must not stay stuck in RQ's started registry."""
    settings = stack_settings(redis_url, 3, tmp_path_factory.mktemp("prelease"))
    with Stack(settings, agents=0) as stack:
        r = redis.Redis.from_url(stack.settings.redis_url or "")
        prompt = f"a ghost ship {uuid.uuid4().hex[:6]}"
        job_id = submit(stack, prompt)
        # what an agent's slot worker does right before `generate` runs, then it "dies"
        queue = Queue(keys.queue_name("sandbox", "normal"), connection=r)
        ghost = SimpleWorker([queue], connection=r, name="ghost-agent/0@deadbeef")
        claim = r.register_script(CLAIM_LUA)
        _origin, claimed = claim(keys=claim_keys(ghost.name, "sandbox"), args=CLAIM_ARGS)
        assert claimed.decode() == job_id
        job = Job.fetch(job_id, connection=r)
        ghost.prepare_execution(job)
        ghost.prepare_job_execution(job)
        assert job_id in StartedJobRegistry(queue=queue)

        deadline = time.monotonic() + 10
        while job_id in StartedJobRegistry(queue=queue) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job_id not in StartedJobRegistry(queue=queue), "the reaper left it started"
        stack.spawn("agents", [sys.executable, "-m", "agents.pool", "--count", "1"])
        with client(stack) as api:
            final = wait_final(api, job_id, timeout=60)
        assert final["status"] == "succeeded", final.get("error")
        assert final["attempts"] == 1  # the ghost never took an attempt
        (image,) = final["images"]
        assert image["sha256"] == hashlib.sha256(render_png(prompt)).hexdigest()
        r.close()


def test_attempt_past_its_deadline_is_cancelled_and_frees_its_slot(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A reply that never finishes: the attempt ends at the job timeout as TIMEOUT, the addon is
    told to stop, and the same (only) slot runs the next job at once."""
    settings = stack_settings(
        redis_url, 4, tmp_path_factory.mktemp("deadline"), job_timeout_s=5, max_attempts=1
    )
    with Stack(settings, agents=1) as stack:
        reply = httpx.post(
            f"{settings.sandbox_url}/_sandbox/faults", json={"kind": "hang", "count": 1}
        )
        assert reply.status_code == 200, reply.text
        hung = submit(stack, "a stuck reply")
        with client(stack) as api:
            record = wait_final(api, hung, timeout=30)
            assert record["status"] == "failed"
            assert record["error"]["code"] == "TIMEOUT" and record["error"]["retryable"] is False
            took = record["finishedAt"] - record["startedAt"]
            assert 5 <= took < 15, took
            prompt = f"after the hang {uuid.uuid4().hex[:6]}"
            started = time.monotonic()
            final = wait_final(api, submit(stack, prompt), timeout=30)
        assert final["status"] == "succeeded", final.get("error")
        assert time.monotonic() - started < 10
        (image,) = final["images"]
        assert image["sha256"] == hashlib.sha256(render_png(prompt)).hexdigest()
