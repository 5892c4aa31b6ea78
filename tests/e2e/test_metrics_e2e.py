"""Prometheus can scrape every process of a real stack: the controller's `/metrics`, and each
agent, pool supervisor and webhook worker found through the controller's HTTP service
discovery list; after a job, each shows its part of it."""

from __future__ import annotations

import time

import httpx
import pytest

from semantest.stack import Stack
from tests.e2e.conftest import submit, wait_final
from tests.integration.test_metrics import sample

pytestmark = pytest.mark.e2e


def scrape(target: str) -> str:
    reply = httpx.get(f"http://{target}/metrics", timeout=5)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return reply.text


def test_every_process_is_a_scrape_target_and_counts_its_part_of_a_job(
    api: httpx.Client, stack: Stack
) -> None:
    deadline = time.monotonic() + 20
    while True:
        found = httpx.get(f"{stack.url}/api/v1/metrics/targets").json()
        roles = {t["labels"]["role"]: t for t in found}
        if {"agent", "pool", "webhooks"} <= set(roles):
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.5)
    agent = next(t for t in found if t["labels"]["name"] == "agent-1")
    assert agent["labels"]["job"] == "semantest-agent"
    before = sample(scrape(agent["targets"][0]), "semantest_attempts_total", outcome="succeeded")

    job_id = submit(api, "a counted lighthouse")
    assert wait_final(api, job_id)["status"] == "succeeded"

    on_agent = scrape(agent["targets"][0])
    assert sample(on_agent, "semantest_attempts_total", outcome="succeeded") == (before or 0) + 1
    assert sample(on_agent, "semantest_agent_starts_total", provider="sandbox") == 1
    assert sample(on_agent, "semantest_agent_cold_start_seconds_count", provider="sandbox") == 1
    # the job became final on the agent: its status and durations are counted there
    assert sample(
        on_agent,
        "semantest_jobs_finished_total",
        provider="sandbox",
        lane="normal",
        status="succeeded",
        code="",
    )
    assert sample(on_agent, "semantest_job_run_seconds_count", provider="sandbox", tenant="admin")
    assert "process_resident_memory_bytes" in on_agent  # a process of its own
    # the pool counts restarts (none yet), the webhook worker its deliveries (none asked)
    assert "# TYPE semantest_agent_restarts_total counter" in scrape(roles["pool"]["targets"][0])
    on_webhooks = scrape(roles["webhooks"]["targets"][0])
    assert "# TYPE semantest_webhook_deliveries_total counter" in on_webhooks
    on_controller = httpx.get(f"{stack.url}/metrics").text
    assert sample(on_controller, "semantest_slots", provider="sandbox", state="idle") == 1
    assert sample(
        on_controller,
        "semantest_http_request_duration_seconds_count",
        method="POST",
        route="/api/v1/images/generate",
        status="202",
    )
    assert job_id not in on_controller and job_id not in on_agent
