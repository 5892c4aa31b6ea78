"""The fleet through the real stack: K tab slots per browser, parking, the pool supervisor's
recycling, and draining on SIGTERM."""

from __future__ import annotations

import hashlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from sandbox.render import render_png
from semantest.stack import Stack
from tests.e2e.conftest import client, job_events, stack_settings, submit, wait_final

pytestmark = pytest.mark.e2e


def check_image(record: dict[str, Any], prompt: str) -> None:
    assert record["status"] == "succeeded", record.get("error")
    (image,) = record["images"]
    assert image["sha256"] == hashlib.sha256(render_png(prompt)).hexdigest()


def fleet(api: httpx.Client) -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = api.get("/api/v1/fleet").json()["agents"]
    return agents


@pytest.fixture(scope="module")
def two_slots(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One agent, one browser, two tab slots; replies take 2 s; a rate limit parks 3 s."""
    settings = stack_settings(
        redis_url,
        6,
        tmp_path_factory.mktemp("slots"),
        sandbox_latency_ms=2000,
        retry_backoff_s=[3],
    )
    with Stack(settings, agents=1, slots=2) as running:
        yield running


def test_two_slots_run_two_jobs_at_once_each_on_its_own_tab(two_slots: Stack) -> None:
    prompts = [f"slot job {i} {uuid.uuid4().hex[:6]}" for i in range(2)]
    with client(two_slots) as api:
        (agent,) = fleet(api)
        assert [s["name"] for s in agent["slots"]] == ["agent-1/0", "agent-1/1"]
        started = time.monotonic()
        ids = [submit(api, p) for p in prompts]
        records = [wait_final(api, i, timeout=30) for i in ids]
        took = time.monotonic() - started
    for record, prompt in zip(records, prompts, strict=True):
        check_image(record, prompt)
    assert {r["agent"] for r in records} == {"agent-1/0", "agent-1/1"}
    first, second = sorted(records, key=lambda r: r["startedAt"])
    assert second["startedAt"] < first["finishedAt"], "the two jobs did not overlap"
    assert took < 2 * 2.0 + 1.5, f"two 2 s jobs on two slots took {took:.1f} s"


def test_a_rate_limited_slot_parks_and_the_job_runs_on_the_other_slot(two_slots: Stack) -> None:
    reply = httpx.post(
        f"{two_slots.settings.sandbox_url}/_sandbox/faults", json={"kind": "ratelimit"}
    )
    assert reply.status_code == 200
    prompt = f"patience {uuid.uuid4().hex[:6]}"
    parked: set[str] = set()
    with client(two_slots) as api:
        job_id = submit(api, prompt)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for slot in fleet(api)[0]["slots"]:
                if slot["state"] == "parked":
                    assert slot["parkedReason"] == "rate-limited"
                    parked.add(slot["name"])
            if api.get(f"/api/v1/images/status/{job_id}").json()["status"] == "succeeded":
                break
            time.sleep(0.1)
        record = wait_final(api, job_id)
    check_image(record, prompt)
    assert record["attempts"] == 2
    by_attempt = {
        e["detail"]["attempt"]: e["detail"]["agent"]
        for e in job_events(two_slots, job_id)
        if e["status"] == "leased"
    }
    assert by_attempt[1] != by_attempt[2], by_attempt
    assert parked == {by_attempt[1]}


def test_the_pool_recycles_an_agent_after_m_jobs(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = stack_settings(
        redis_url, 7, tmp_path_factory.mktemp("recycle"), recycle_after_jobs=2
    )
    with Stack(settings, agents=1) as stack, client(stack) as api:
        (before,) = fleet(api)
        prompts = [f"recycled {i} {uuid.uuid4().hex[:6]}" for i in range(4)]
        for prompt in prompts:
            check_image(wait_final(api, submit(api, prompt), timeout=60), prompt)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = fleet(api)
            if now and now[0]["pid"] != before["pid"] and now[0]["state"] == "ready":
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"agent was not recycled: {fleet(api)}")
        assert now[0]["id"] == "agent-1"  # same name, same profile
        log = (stack.logs_dir / "agents.log").read_text()
        assert "agent-1 recycled" in log


@pytest.fixture(scope="module")
def draining(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Replies take 3 s; a SIGTERMed agent lets a running job finish for up to 1 s only."""
    settings = stack_settings(
        redis_url, 8, tmp_path_factory.mktemp("drain"), sandbox_latency_ms=3000, drain_grace_s=1
    )
    with Stack(settings, agents=1) as running:
        yield running


def running_agent_pid(api: httpx.Client, job_id: str) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        record = api.get(f"/api/v1/images/status/{job_id}").json()
        if record["stage"] == "waiting":
            return int(fleet(api)[0]["pid"])
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never ran")


def test_sigterm_past_the_grace_gives_the_job_back_without_using_an_attempt(
    draining: Stack,
) -> None:
    prompt = f"given back {uuid.uuid4().hex[:6]}"
    with client(draining) as api:
        job_id = submit(api, prompt)
        pid = running_agent_pid(api, job_id)
        os.kill(pid, signal.SIGTERM)  # the agent drains; the pool starts a new one
        record = wait_final(api, job_id, timeout=60)
    check_image(record, prompt)
    assert record["attempts"] == 1  # the drained attempt was not counted
    statuses = [e["status"] for e in job_events(draining, job_id)]
    assert "queued" in statuses[1:], statuses  # it went back to the queue
    log = (draining.logs_dir / "agents.log").read_text()
    assert f"job {job_id} given back" in log


def test_an_account_over_its_hourly_budget_takes_no_more_jobs(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = stack_settings(
        redis_url, 9, tmp_path_factory.mktemp("budget"), account_budget_per_hour=2
    )
    with Stack(settings, agents=1) as stack, client(stack) as api:
        prompts = [f"budgeted {i} {uuid.uuid4().hex[:6]}" for i in range(3)]
        for prompt in prompts[:2]:
            check_image(wait_final(api, submit(api, prompt), timeout=60), prompt)
        third = submit(api, prompts[2])
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:  # heartbeats come every 2 s
            (slot,) = fleet(api)[0]["slots"]
            if slot["state"] == "parked":
                break
            time.sleep(0.2)
        assert (slot["state"], slot["parkedReason"]) == ("parked", "budget")
        time.sleep(2)
        assert api.get(f"/api/v1/images/status/{third}").json()["status"] == "queued"


def test_sigterm_within_the_grace_lets_the_running_job_finish(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = stack_settings(
        redis_url, 10, tmp_path_factory.mktemp("grace"), sandbox_latency_ms=2000, drain_grace_s=20
    )
    with Stack(settings, agents=1) as stack, client(stack) as api:
        prompt = f"finish me {uuid.uuid4().hex[:6]}"
        job_id = submit(api, prompt)
        pid = running_agent_pid(api, job_id)
        os.kill(pid, signal.SIGTERM)
        record = wait_final(api, job_id, timeout=30)
        check_image(record, prompt)
        assert record["attempts"] == 1 and record["agent"].startswith("agent-1/")
        deadline = time.monotonic() + 20
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the drained agent did not exit"
            time.sleep(0.1)


def test_a_chromium_crash_restarts_the_agent_and_the_job_runs_again(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = stack_settings(
        redis_url, 11, tmp_path_factory.mktemp("chromium"), sandbox_latency_ms=2000
    )
    with Stack(settings, agents=1) as stack, client(stack) as api:
        prompt = f"survive the crash {uuid.uuid4().hex[:6]}"
        job_id = submit(api, prompt)
        pid = running_agent_pid(api, job_id)
        browser = next(  # Chromium's browser process: the one without a --type= switch
            p
            for p in psutil.Process(pid).children(recursive=True)
            if "chrom" in p.name() and not any(a.startswith("--type=") for a in p.cmdline())
        )
        browser.kill()
        record = wait_final(api, job_id, timeout=60)
        check_image(record, prompt)
        assert record["attempts"] == 2
        log = (stack.logs_dir / "agents.log").read_text()
        assert "the browser closed unexpectedly" in log
        assert "agent-1 exited with 70" in log
        (agent,) = fleet(api)
        assert agent["pid"] != pid
