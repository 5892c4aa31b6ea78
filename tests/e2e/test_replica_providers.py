"""The real ChatGPT and Gemini addons, end to end on their DOM replicas (`sandbox/replicas`).

One stack for the module on Redis database 37: the controller, and one agent per provider with
real Chromium, the real extension and the addons exactly as shipped (their real match patterns
and start URLs: `https://chatgpt.com/`, `https://gemini.google.com/app`). The browsers reach the
replicas through the replicas' proxy (`SEMANTEST_BROWSER_PROXY`) with their test certificate
accepted; the agent downloads each image with the profile's cookies from the other host, and
the stored bytes are compared by sha256 with what the replica rendered.
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
from tests.e2e.conftest import run_job as run
from tests.e2e.conftest import served_sha256s as stored_sha256
from tests.e2e.conftest import stack_settings

pytestmark = pytest.mark.e2e

DB = 37
PROVIDERS = ("chatgpt", "gemini")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with serve(tmp_path_factory.mktemp("replica-cert"), free_port()) as running:
        yield running


@pytest.fixture(scope="module")
def replica_stack(
    redis_url: str, replicas: Running, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    settings = stack_settings(
        redis_url,
        DB,
        tmp_path_factory.mktemp("replica-stack"),
        browser_proxy=replicas.proxy.url,
        browser_ignore_https_errors=True,
        retry_backoff_s=[1],
        job_timeout_s=30,
    )
    with Stack(settings, agents=0) as stack:
        for provider in PROVIDERS:
            argv = [sys.executable, "-m", "agents", "--provider", provider]
            stack.spawn(f"agent-{provider}", [*argv, "--name", f"{provider}-1"])
        stack.wait_agents(len(PROVIDERS), time.monotonic() + 60)
        yield stack


@pytest.fixture
def api(replica_stack: Stack, replicas: Running) -> Iterator[httpx.Client]:
    for provider in PROVIDERS:
        httpx.delete(f"{replicas.control_url}/_replica/{provider}/faults", verify=False)
    with httpx.Client(
        base_url=replica_stack.url, headers={"X-API-Key": replica_stack.admin_key}, timeout=10
    ) as client:
        yield client


def fault(replicas: Running, provider: str, kind: str, **extra: Any) -> None:
    reply = httpx.post(
        f"{replicas.control_url}/_replica/{provider}/faults",
        json={"kind": kind, "count": 1, **extra},
        verify=False,
    )
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_job_runs_on_the_replica_and_stores_its_exact_image(
    api: httpx.Client, provider: str
) -> None:
    prompt = f"a heron in the reeds, {provider} {time.time_ns()}"
    record = run(api, {"prompt": prompt, "provider": provider})
    assert record["status"] == "succeeded", record
    assert record["agent"].startswith(f"{provider}-1/")
    assert stored_sha256(api, record) == [hashlib.sha256(render_png(prompt)).hexdigest()]
    image = record["images"][0]
    host = {"chatgpt": "files.oaiusercontent.com", "gemini": "lh3.google.com"}
    assert image["sourceUrl"].startswith(f"https://{host[provider]}/")


def test_a_rate_limit_notice_is_retried_after_its_wait(
    api: httpx.Client, replicas: Running
) -> None:
    fault(replicas, "chatgpt", "ratelimit", retryAfter=2)
    prompt = f"later, please {time.time_ns()}"
    record = run(api, {"prompt": prompt, "provider": "chatgpt"})
    assert (record["status"], record["attempts"]) == ("succeeded", 2), record
    first = record["attemptHistory"][0]
    assert first["error"]["code"] == "PROVIDER_RATE_LIMITED", first
    assert stored_sha256(api, record) == [hashlib.sha256(render_png(prompt)).hexdigest()]


def test_after_the_page_changes_the_fallback_selectors_still_drive_it(
    api: httpx.Client, replicas: Running
) -> None:
    # The first attempt meets a rate-limit notice on the current page; the slot then opens the
    # page afresh for the retry, and ChatGPT now serves its legacy markup.
    fault(replicas, "chatgpt", "ratelimit", retryAfter=1)
    control = f"{replicas.control_url}/_replica/chatgpt/variant"
    assert httpx.put(control, json={"variant": "legacy"}, verify=False).status_code == 200
    prompt = f"a lantern on the quay {time.time_ns()}"
    served = len(httpx.get(f"{replicas.control_url}/_replica/chatgpt/pages", verify=False).json())
    record = run(api, {"prompt": prompt, "provider": "chatgpt"})
    assert (record["status"], record["attempts"]) == ("succeeded", 2), record
    pages = httpx.get(f"{replicas.control_url}/_replica/chatgpt/pages", verify=False).json()
    # the retry's page was the legacy one (a slot tidying itself afterwards may load another)
    assert pages[served:] and set(pages[served:]) == {"legacy"}, pages
    assert stored_sha256(api, record) == [hashlib.sha256(render_png(prompt)).hexdigest()]
    # it was the legacy page: the evidence of the first attempt shows the current one
    first = api.get(f"/api/v1/jobs/{record['id']}/artifacts/1/dom.html").text
    assert 'id="prompt-textarea"' in first


def test_a_refusal_fails_at_once(api: httpx.Client, replicas: Running) -> None:
    fault(replicas, "gemini", "refusal")
    record = run(api, {"prompt": f"something refused {time.time_ns()}", "provider": "gemini"})
    assert (record["status"], record["attempts"]) == ("failed", 1), record
    assert record["error"]["code"] == "CONTENT_REFUSED"
    assert "policies" in record["error"]["message"]


def test_a_slow_reply_is_waited_for(api: httpx.Client, replicas: Running) -> None:
    fault(replicas, "gemini", "slow", retryAfter=2)  # the reply streams over two seconds
    prompt = f"take your time {time.time_ns()}"
    started = time.monotonic()
    record = run(api, {"prompt": prompt, "provider": "gemini"})
    assert (record["status"], record["attempts"]) == ("succeeded", 1), record
    assert time.monotonic() - started >= 2
    assert stored_sha256(api, record) == [hashlib.sha256(render_png(prompt)).hexdigest()]


def test_the_proxy_serves_only_the_replicas_and_images_need_the_session(
    replicas: Running,
) -> None:
    with httpx.Client(proxy=replicas.proxy.url, verify=False, timeout=10) as browser:
        with pytest.raises(httpx.ProxyError):
            browser.get("https://example.com/")  # nothing leaves the machine
        signed_out = browser.get("https://gemini.google.com/app")
        assert signed_out.status_code == 302  # the first visit signs in by redirect
        # an image URL without the profile's cookie (or a signature) is refused
        assert browser.get("https://lh3.google.com/gg/anything=s1024").status_code == 403
        assert browser.get("https://files.oaiusercontent.com/file-x?sig=y").status_code == 403
    assert "CONNECT example.com:443" in replicas.proxy.refused


def test_a_logged_out_page_parks_the_slot_and_the_job_waits_for_another(
    api: httpx.Client, replicas: Running
) -> None:
    # Last in the module: the chatgpt slot stays parked for a minute afterwards.
    fault(replicas, "chatgpt", "logout")
    accepted = api.post("/api/v1/images/generate", json={"prompt": "hi", "provider": "chatgpt"})
    job_id = accepted.json()["jobId"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        record = api.get(f"/api/v1/images/status/{job_id}").json()
        if record["attemptHistory"]:
            break
        time.sleep(0.1)
    (first,) = record["attemptHistory"]
    assert first["error"]["code"] == "PROVIDER_LOGGED_OUT", first
    assert first["error"]["retryable"] is True
    assert record["status"] in ("retrying", "queued"), record
    slots = [s for a in api.get("/api/v1/fleet").json()["agents"] for s in a["slots"]]
    (slot,) = [s for s in slots if s["provider"] == "chatgpt"]
    assert (slot["state"], slot["parkedReason"]) == ("parked", "logged-out")
    # the evidence shows the page as the addon left it: the notice in the last turn
    dom = api.get(f"/api/v1/jobs/{job_id}/artifacts/1/dom.html")
    assert dom.status_code == 200 and "Please log in again" in dom.text
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code in (200, 202)
