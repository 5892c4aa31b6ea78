"""Routing and failover through the whole stack, across two real providers.

One stack on Redis database 35: the sandbox with one agent, and a ChatGPT agent on its DOM
replica (`sandbox/replicas`, reached through the replicas' proxy). A job that names a list of
providers runs on the first healthy one with capacity; when that provider fails with a
retryable provider error, the job fails over to the next one, and its record keeps the attempt
history (provider, agent, error, evidence).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.render import render_png
from sandbox.replicas.app import Running, serve
from semantest.stack import Stack, free_port
from tests.e2e.conftest import client, stack_settings, wait_final

pytestmark = pytest.mark.e2e

DB = 35


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with serve(tmp_path_factory.mktemp("failover-cert"), free_port()) as running:
        yield running


@pytest.fixture(scope="module")
def two_providers(
    redis_url: str, replicas: Running, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    settings = stack_settings(
        redis_url,
        DB,
        tmp_path_factory.mktemp("failover"),
        browser_proxy=replicas.proxy.url,
        browser_ignore_https_errors=True,
        retry_backoff_s=[5],  # a failover does not wait for it
        job_timeout_s=30,
    )
    with Stack(settings, agents=1) as stack:
        argv = [sys.executable, "-m", "agents", "--provider", "chatgpt", "--name", "chatgpt-1"]
        stack.spawn("agent-chatgpt", argv)
        stack.wait_agents(2, time.monotonic() + 60)
        yield stack


@pytest.fixture
def api(two_providers: Stack, replicas: Running) -> Iterator[httpx.Client]:
    httpx.delete(f"{replicas.control_url}/_replica/chatgpt/faults", verify=False)
    with client(two_providers) as c:
        yield c


def fault(replicas: Running, kind: str) -> None:
    reply = httpx.post(
        f"{replicas.control_url}/_replica/chatgpt/faults",
        json={"kind": kind, "count": 1},
        verify=False,
    )
    assert reply.status_code == 200, reply.text


def submit(api: httpx.Client, body: dict[str, Any]) -> str:
    reply = api.post("/api/v1/images/generate", json=body)
    assert reply.status_code == 202, reply.text
    job_id: str = reply.json()["jobId"]
    return job_id


def test_a_list_runs_on_its_first_provider(api: httpx.Client) -> None:
    prompt = f"a kingfisher {time.time_ns()}"
    record = wait_final(api, submit(api, {"prompt": prompt, "provider": ["chatgpt", "sandbox"]}))
    assert record["status"] == "succeeded" and record["provider"] == "chatgpt"
    assert record["agent"].startswith("chatgpt-1/") and record["attemptHistory"] == []
    assert record["images"][0]["sha256"] == hashlib.sha256(render_png(prompt)).hexdigest()


def test_a_refusal_does_not_fail_over(api: httpx.Client, replicas: Running) -> None:
    """(Before the logout test: a logged-out slot is parked, and routing then skips it.)"""
    fault(replicas, "refusal")
    job_id = submit(api, {"prompt": f"no {time.time_ns()}", "provider": ["chatgpt", "sandbox"]})
    record = wait_final(api, job_id, timeout=60)
    assert record["status"] == "failed" and record["provider"] == "chatgpt", record
    assert record["error"]["code"] == "CONTENT_REFUSED" and record["attempts"] == 1


def test_a_logged_out_provider_fails_over_to_the_next(api: httpx.Client, replicas: Running) -> None:
    fault(replicas, "logout")
    prompt = f"a heron {time.time_ns()}"
    started = time.monotonic()
    job_id = submit(api, {"prompt": prompt, "provider": ["chatgpt", "sandbox"]})
    record = wait_final(api, job_id, timeout=60)
    assert record["status"] == "succeeded", record["error"]
    assert record["provider"] == "sandbox" and record["attempts"] == 2
    assert time.monotonic() - started < 5 + 30  # no back-off wait before the other provider
    # a list job while the logged-out slot is parked: routed to the provider with capacity
    routed = submit(api, {"prompt": f"next {time.time_ns()}", "provider": ["chatgpt", "sandbox"]})
    assert api.get(f"/api/v1/images/status/{routed}").json()["provider"] == "sandbox"
    (first,) = record["attemptHistory"]
    assert first["provider"] == "chatgpt" and first["agent"].startswith("chatgpt-1/")
    assert first["error"]["code"] == "PROVIDER_LOGGED_OUT" and first["error"]["retryable"]
    assert set(first["evidence"]) >= {"screenshot", "dom", "console", "state"}
    assert api.get(first["evidence"]["screenshot"]).content[:4] == b"\x89PNG"
    # the image is the sandbox's rendering of the same prompt
    (image,) = record["images"]
    assert image["sha256"] == hashlib.sha256(render_png(prompt)).hexdigest()
    assert hashlib.sha256(api.get(image["url"]).content).hexdigest() == image["sha256"]


def test_a_single_provider_job_waits_for_it(api: httpx.Client) -> None:
    """(After the logout test: the ChatGPT slot is parked for a minute, the sandbox is idle.)"""
    job_id = submit(api, {"prompt": f"stay {time.time_ns()}", "provider": "chatgpt"})
    time.sleep(3)
    record = api.get(f"/api/v1/images/status/{job_id}").json()
    assert record["status"] == "queued" and record["provider"] == "chatgpt"
    assert record["providers"] == [] and record["attempts"] == 0
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
