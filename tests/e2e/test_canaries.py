"""Canaries through the whole stack: a failing canary marks its provider degraded (health,
fleet, routing) and alerts the admin tenant's webhook; passing canaries bring it back.

One stack on Redis database 34 with one sandbox agent, canaries every second, one attempt per
job (a canary's failure is final at once). The sandbox's fault queue makes its next replies
refused, which is what a provider that stopped working looks like to a canary.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from semantest.stack import Stack
from tests.e2e.conftest import Faults, client, stack_settings
from tests.webhook_receiver import Receiver, event_types

pytestmark = pytest.mark.e2e

DB = 34


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def canary_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = stack_settings(
        redis_url,
        DB,
        tmp_path_factory.mktemp("canaries"),
        canary_interval_s=1,
        max_attempts=1,
        webhook_allow_private=True,
        webhook_backoff_s=1,
    )
    with Stack(settings, agents=1) as running:
        yield running


@pytest.fixture
def api(canary_stack: Stack) -> Iterator[httpx.Client]:
    with client(canary_stack) as c:
        yield c


def until(what: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what.__doc__ or what}")


def sandbox_health(api: httpx.Client) -> dict[str, Any]:
    health: dict[str, Any] = api.get("/api/v1/health").json()["providers"]["sandbox"]
    return health


def test_a_failing_canary_degrades_and_a_passing_one_recovers(
    api: httpx.Client, canary_stack: Stack, receiver: Receiver
) -> None:
    hook = f"/admin-{uuid.uuid4().hex[:6]}"
    set_url = api.put("/api/v1/admin/tenants/admin", json={"webhookUrl": receiver.url(hook)})
    assert set_url.status_code == 200, set_url.text
    until(lambda: sandbox_health(api)["status"] == "ok")  # canaries pass on a healthy sandbox

    faults = Faults(canary_stack.settings.sandbox_url)
    faults.inject("refusal", 1000)  # every reply refused: the provider is broken
    try:
        degraded = until(lambda: (h := sandbox_health(api))["status"] == "degraded" and h)
        assert degraded["reason"].startswith("CONTENT_REFUSED")
        fleet = api.get("/api/v1/fleet").json()
        assert fleet["providers"]["sandbox"]["status"] == "degraded"
        [alert] = receiver.wait(hook, 1)
        assert alert.headers["webhook-id"].startswith("evt_provider_sandbox_degraded")
        assert event_types([alert]) == ["provider.degraded"]
        assert b'"provider":"sandbox"' in alert.body.replace(b" ", b"")

        # routing: a job that may run anywhere avoids the degraded provider
        auto = api.post(
            "/api/v1/images/generate",
            json={"prompt": "routed away", "provider": ["sandbox", "chatgpt"]},
        )
        assert auto.status_code == 202, auto.text
        job_id = auto.json()["jobId"]
        record = api.get(f"/api/v1/images/status/{job_id}").json()
        assert record["provider"] == "chatgpt" and record["providers"] == ["sandbox", "chatgpt"]
        api.post(f"/api/v1/jobs/{job_id}/cancel")
    finally:
        faults.clear()

    recovered = until(lambda: (h := sandbox_health(api))["status"] == "ok" and h)
    assert recovered["reason"] is None
    until(lambda: "provider.recovered" in event_types(receiver.at(hook)))
    alerts = [t for t in event_types(receiver.at(hook)) if t.startswith("provider.")]
    assert alerts == ["provider.degraded", "provider.recovered"]  # the canceled job's is there too
    # a healthy provider with capacity gets routed jobs again
    again = api.post(
        "/api/v1/images/generate",
        json={"prompt": "routed back", "provider": ["sandbox", "chatgpt"]},
    ).json()["jobId"]
    assert api.get(f"/api/v1/images/status/{again}").json()["provider"] == "sandbox"


def test_canaries_are_not_the_admin_tenants_jobs(api: httpx.Client) -> None:
    until(lambda: sandbox_health(api)["status"] in ("ok", "degraded"))
    listed = api.get("/api/v1/jobs").json()["jobs"]
    assert not any(j["prompt"].startswith("Semantest canary") for j in listed)


def test_a_failed_jobs_webhook_carries_evidence_urls(api: httpx.Client, receiver: Receiver) -> None:
    hook = f"/failed-{uuid.uuid4().hex[:6]}"
    body = {"prompt": "refused [sandbox:refuse]", "webhook": {"url": receiver.url(hook)}}
    job_id = api.post("/api/v1/images/generate", json=body).json()["jobId"]
    [got] = receiver.wait(hook, 1, timeout=60)
    data = json.loads(got.body)["data"]
    assert data["id"] == job_id and data["error"]["code"] == "CONTENT_REFUSED"
    shot = data["artifacts"]["screenshot"]
    assert shot.startswith("http") and shot.endswith(f"/jobs/{job_id}/artifacts/1/screenshot.png")
    assert data["attemptHistory"][0]["evidence"]["dom"].startswith("http")
    assert api.get(shot).content[:4] == b"\x89PNG"
