"""API providers end to end: `openai` and `stability` jobs through the real controller, queues
and API workers (`python -m agents.api_worker`, no browser) against the local stand-ins of the
two APIs (`sandbox/standins`): the same job record, stored image bytes (sha256), retries after a
429's `Retry-After`, refusals, a refused key, per-tenant keys and the job's webhook.

One stack for the module on Redis database 36: controller, webhook worker, and the API worker
`Stack` (`semantest up`) starts for each API with a fleet key. No Chromium.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from sandbox.render import ImageSpec, render
from sandbox.standins.app import create_app
from semantest.stack import Stack, free_port
from tests.conftest import serve_app
from tests.e2e.conftest import run_job as run
from tests.e2e.conftest import served_sha256s as image_sha256s
from tests.e2e.conftest import stack_settings
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e

DB = 36
FLEET_OPENAI = "sk-fleet-openai-" + "a" * 24
TENANT_OPENAI = "sk-acme-openai-" + "b" * 24
FLEET_STABILITY = "sk-fleet-stability-" + "c" * 24
REVOKED_OPENAI = "sk-revoked-openai-" + "d" * 24
SCOPES = ["jobs:read", "jobs:write"]
MODEL = "gpt-image-1"


@pytest.fixture(scope="module")
def standins() -> Iterator[str]:
    """Both API stand-ins on one loopback port, accepting the keys above."""
    keys = {"openai": {FLEET_OPENAI, TENANT_OPENAI}, "stability": {FLEET_STABILITY}}
    with serve_app(create_app(keys), free_port(), "stand-ins") as url:
        yield url


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def api_stack(
    redis_url: str, standins: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    settings = stack_settings(
        redis_url,
        DB,
        tmp_path_factory.mktemp("api-stack"),
        openai_base_url=standins,
        stability_base_url=standins,
        openai_api_key=SecretStr(FLEET_OPENAI),
        stability_api_key=SecretStr(FLEET_STABILITY),
        provider_keys={
            "openai": {"acme": SecretStr(TENANT_OPENAI), "revoked": SecretStr(REVOKED_OPENAI)}
        },
        openai_model=MODEL,
        webhook_allow_private=True,
        retry_backoff_s=[1],
    )
    with Stack(settings, agents=0) as stack:  # an API worker per provider with a key
        assert stack.api_providers() == ["openai", "stability"]
        yield stack


@pytest.fixture
def api(api_stack: Stack, standins: str) -> Iterator[httpx.Client]:
    httpx.delete(f"{standins}/_standin/faults")
    with httpx.Client(
        base_url=api_stack.url, headers={"X-API-Key": api_stack.admin_key}, timeout=10
    ) as client:
        yield client


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_openai_job_stores_the_apis_exact_bytes_and_posts_its_webhook(
    api: httpx.Client, api_stack: Stack, standins: str, receiver: Receiver
) -> None:
    prompt = f"a red kite over dunes {time.time_ns()}"
    record = run(
        api,
        {
            "prompt": prompt,
            "provider": "openai",
            "options": {"count": 2, "size": "256x256"},
            "webhook": {"url": receiver.url("/openai")},
        },
    )
    assert record["status"] == "succeeded", record
    assert record["provider"] == "openai" and record["attempts"] == 1
    assert record["agent"].startswith("api-openai/")
    expected = [sha(render(ImageSpec(prompt, 256, 256, n, None, MODEL))) for n in range(2)]
    assert image_sha256s(api, record) == expected
    assert [(i["width"], i["height"]) for i in record["images"]] == [(256, 256)] * 2
    asked = httpx.get(f"{standins}/_standin/requests").json()[-1]
    assert asked["key"] == FLEET_OPENAI  # tenant admin has no key of its own
    assert (asked["model"], asked["n"], asked["size"]) == ("gpt-image-1", 2, "256x256")
    (hook,) = receiver.wait("/openai", 1)
    assert b"job.succeeded" in hook.body and record["id"].encode() in hook.body


def test_openai_url_answers_are_downloaded(api: httpx.Client) -> None:
    # dall-e-* answer URLs; the worker asks for base64 but must cope with either.
    prompt = f"a lighthouse {time.time_ns()}"
    record = run(api, {"prompt": prompt, "provider": "openai", "options": {"model": "dall-e-3"}})
    assert record["status"] == "succeeded", record
    spec = ImageSpec(prompt, 512, 512, 0, None, "dall-e-3")
    assert image_sha256s(api, record) == [sha(render(spec))]


def test_a_tenants_own_key_is_used_for_its_jobs(api: httpx.Client, standins: str) -> None:
    made = api.post("/api/v1/admin/keys", json={"tenant": "acme", "scopes": SCOPES})
    assert made.status_code == 201, made.text
    acme = httpx.Client(base_url=str(api.base_url), headers={"X-API-Key": made.json()["key"]})
    prompt = f"acme's own {time.time_ns()}"
    record = run(acme, {"prompt": prompt, "provider": "openai"})
    assert record["status"] == "succeeded", record
    asked = [r for r in httpx.get(f"{standins}/_standin/requests").json() if r["prompt"] == prompt]
    assert [r["key"] for r in asked] == [TENANT_OPENAI]
    assert asked[0]["user"] == "acme"


def test_a_429_is_retried_after_its_retry_after(api: httpx.Client, standins: str) -> None:
    fault = {"kind": "ratelimit", "count": 1, "retryAfter": 4}
    assert httpx.post(f"{standins}/_standin/faults", json=fault).status_code == 200
    prompt = f"patience {time.time_ns()}"
    started = time.monotonic()
    record = run(api, {"prompt": prompt, "provider": "openai"})
    assert record["status"] == "succeeded", record
    assert record["attempts"] == 2
    # the notice's wait, not the 1 s back-off (RQ keeps scheduled times in whole seconds)
    assert time.monotonic() - started >= 3
    events = api.get(f"/api/v1/jobs/{record['id']}/events", timeout=5).text
    assert "PROVIDER_RATE_LIMITED" in events
    assert image_sha256s(api, record) == [sha(render(ImageSpec(prompt, model=MODEL)))]


def test_a_running_request_is_canceled_and_frees_its_slot(api: httpx.Client, standins: str) -> None:
    fault = {"kind": "slow", "count": 1, "retryAfter": 6}
    assert httpx.post(f"{standins}/_standin/faults", json=fault).status_code == 200
    job_id = api.post(
        "/api/v1/images/generate", json={"prompt": "never mind", "provider": "openai"}
    ).json()["jobId"]
    deadline = time.monotonic() + 10
    while api.get(f"/api/v1/images/status/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    started = time.monotonic()
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code in (200, 202)
    prompt = f"right after {time.time_ns()}"
    record = run(api, {"prompt": prompt, "provider": "openai"})  # the worker's one slot
    assert record["status"] == "succeeded", record
    assert time.monotonic() - started < 5  # not after the 6 s request
    canceled = api.get(f"/api/v1/images/status/{job_id}").json()
    assert (canceled["status"], canceled["images"]) == ("canceled", [])


def test_a_content_policy_refusal_fails_at_once(api: httpx.Client) -> None:
    for provider in ("openai", "stability"):
        record = run(api, {"prompt": "[standin:refuse] something", "provider": provider})
        assert record["status"] == "failed", record
        assert record["attempts"] == 1
        assert record["error"]["code"] == "CONTENT_REFUSED"
        assert record["error"]["retryable"] is False
        assert (
            "safety system" in record["error"]["message"]
            or "moderation" in record["error"]["message"]
        )


def test_a_server_error_is_retried(api: httpx.Client, standins: str) -> None:
    fault = {"kind": "server", "count": 1}
    assert httpx.post(f"{standins}/_standin/faults", json=fault).status_code == 200
    prompt = f"server hiccup {time.time_ns()}"
    record = run(api, {"prompt": prompt, "provider": "stability"})
    assert (record["status"], record["attempts"]) == ("succeeded", 2), record
    assert image_sha256s(api, record) == [sha(render(ImageSpec(prompt)))]


def test_stability_job_stores_the_apis_bytes(api: httpx.Client, standins: str) -> None:
    prompt = f"a wide valley {time.time_ns()}"
    record = run(api, {"prompt": prompt, "provider": "stability", "options": {"style": "anime"}})
    assert record["status"] == "succeeded", record
    assert image_sha256s(api, record) == [sha(render(ImageSpec(prompt, style="anime")))]
    asked = httpx.get(f"{standins}/_standin/requests").json()[-1]
    assert (asked["key"], asked["style_preset"], asked["output_format"]) == (
        FLEET_STABILITY,
        "anime",
        "png",
    )


def test_an_option_the_provider_does_not_honour_is_refused(api: httpx.Client) -> None:
    for provider, options, field in (
        ("stability", {"size": "256x256"}, "options.size"),
        ("stability", {"model": "sd3"}, "options.model"),
        ("chatgpt", {"count": 2}, "options.count"),
    ):
        reply = api.post(
            "/api/v1/images/generate",
            json={"prompt": "p", "provider": provider, "options": options},
        )
        assert reply.status_code == 422, reply.text
        (detail,) = reply.json()["error"]["details"]
        assert detail["field"] == field and provider in detail["reason"]
    batch = api.post(
        "/api/v1/images/batch",
        json={
            "prompts": ["a", {"prompt": "b", "provider": "gemini"}],
            "options": {"size": "256x256"},
        },
    )
    assert batch.status_code == 422, batch.text
    assert batch.json()["error"]["details"][0]["field"] == "options.size"


def test_stability_json_answers_decode(standins: str) -> None:
    # the JSON form the worker does not ask for, but which the stand-in must still follow
    reply = httpx.post(
        f"{standins}/v2beta/stable-image/generate/core",
        files={"prompt": (None, "json please")},
        headers={"Authorization": f"Bearer {FLEET_STABILITY}", "Accept": "application/json"},
    )
    assert reply.status_code == 200 and reply.json()["finish_reason"] == "SUCCESS"
    assert base64.b64decode(reply.json()["image"]) == render(ImageSpec("json please"))


def test_the_stand_ins_refuse_unknown_keys_as_the_apis_do(standins: str) -> None:
    openai = httpx.post(
        f"{standins}/v1/images/generations",
        json={"prompt": "x"},
        headers={"Authorization": "Bearer sk-wrong-key-123456"},
    )
    assert openai.status_code == 401
    assert openai.json()["error"]["code"] == "invalid_api_key"
    stability = httpx.post(
        f"{standins}/v2beta/stable-image/generate/core",
        files={"prompt": (None, "x")},
        headers={"Authorization": "Bearer nope"},
    )
    assert stability.status_code == 401 and stability.json()["name"] == "unauthorized"


def test_a_refused_key_fails_the_job_as_logged_out_without_retrying(api: httpx.Client) -> None:
    # tenant "revoked" has a key of its own that the API does not accept
    made = api.post("/api/v1/admin/keys", json={"tenant": "revoked", "scopes": SCOPES})
    assert made.status_code == 201, made.text
    with httpx.Client(base_url=str(api.base_url), headers={"X-API-Key": made.json()["key"]}) as c:
        record = run(c, {"prompt": "anything", "provider": "openai"})
        assert (record["status"], record["attempts"]) == ("failed", 1), record
        assert record["error"]["code"] == "PROVIDER_LOGGED_OUT"
        assert "Incorrect API key" in record["error"]["message"]
        assert REVOKED_OPENAI not in record["error"]["message"]  # the API shows only its ends
        # no stability key of its own: the fleet's is used, and works
        assert run(c, {"prompt": "fine", "provider": "stability"})["status"] == "succeeded"


def test_a_server_error_fails_over_to_the_next_api_in_the_list(
    api: httpx.Client, standins: str
) -> None:
    fault = {"kind": "server", "count": 1}
    assert httpx.post(f"{standins}/_standin/faults", json=fault).status_code == 200
    prompt = f"fail over {time.time_ns()}"
    record = run(api, {"prompt": prompt, "provider": ["stability", "openai"]})
    assert (record["status"], record["attempts"]) == ("succeeded", 2), record
    history = record["attemptHistory"]
    assert [(h["provider"], h["error"]["code"]) for h in history] == [
        ("stability", "PROVIDER_ERROR")
    ]
    assert record["provider"] == "openai", record
    assert image_sha256s(api, record) == [sha(render(ImageSpec(prompt, 512, 512, 0, None, MODEL)))]
