"""Providers are data, and how a job's provider choice is checked and routed.

A real controller (a child process: the provider list is per process) on Redis database 35,
emptied before and after: the provider enum in `/openapi.json` comes from the addon manifests,
a published addon that names a new provider is accepted at once, an unknown provider is a 422
naming the field, and a list or `auto` is routed by health and capacity.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from agents.capture import fetch_bytes
from extension_bridge.protocol import CapturedImage, json_schema
from sandbox.render import render_png
from semantest import keys, routing
from semantest.config import Settings
from semantest.errors import GenerationFailed, JobErrorCode
from semantest.stack import Stack, free_port
from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.integration

DB = 35
ADDONS = Path(__file__).resolve().parents[2] / "addons"


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = f"{redis_url.rsplit('/', 1)[0]}/{DB}"
    redis.Redis.from_url(url).flushdb()
    settings = Settings(
        redis_url=url,
        admin_key=SecretStr(ADMIN_KEY),
        port=free_port(),
        sandbox_port=free_port(),
        data_dir=tmp_path_factory.mktemp("routing"),
        rate_limits=False,
    )
    with Stack(settings, agents=0) as running:
        yield running
    redis.Redis.from_url(url).flushdb()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    ) as c:
        yield c


def provider_schema(api: httpx.Client) -> dict[str, Any]:
    document = api.get("/openapi.json").json()
    schema: dict[str, Any] = document["components"]["schemas"]["GenerateRequest"]
    return schema["properties"]["provider"]


def test_the_openapi_enum_is_the_manifests_providers(api: httpx.Client) -> None:
    one, listed = provider_schema(api)["anyOf"]
    assert {"sandbox", "chatgpt", "gemini", "auto"} <= set(one["enum"])
    assert "auto" not in listed["items"]["enum"] and "sandbox" in listed["items"]["enum"]
    manifests = [p.read_text() for p in ADDONS.glob("*/addon.json")]
    assert sum('"provider"' in m for m in manifests) >= 3  # sandbox, chatgpt, gemini


def test_an_unknown_provider_is_a_422_naming_the_field(api: httpx.Client) -> None:
    for bad in ("nope", ["sandbox", "nope"], []):
        reply = api.post("/api/v1/images/generate", json={"prompt": "x", "provider": bad})
        assert reply.status_code == 422, reply.text
        error = reply.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"][0]["field"] == "provider"
    assert (
        "known: sandbox"
        in api.post("/api/v1/images/generate", json={"prompt": "x", "provider": "nope"}).json()[
            "error"
        ]["details"][0]["reason"]
    )


def test_a_published_provider_is_accepted_at_once(api: httpx.Client, stack: Stack) -> None:
    manifest = {
        "id": "acme",
        "name": "Acme image chat",
        "version": "1.0.0",
        "provider": "acme",
        "startUrl": "https://acme.example/chat",
        "matches": ["https://acme.example/*"],
        "js": ["driver.js"],
    }
    files = {
        "driver.js": "SemantestAddon.define({id: 'acme', version: '1.0.0', "
        "detectState() { return 'ready'; }, submit() {}, collect() {}});\n"
    }
    refused = api.post("/api/v1/images/generate", json={"prompt": "x", "provider": "acme"})
    assert refused.status_code == 422
    published = api.put(
        "/api/v1/addons/acme/versions/1.0.0", json={"manifest": manifest, "files": files}
    )
    assert published.status_code in (200, 201), published.text
    deadline = 50
    while deadline and "acme" not in provider_schema(api)["anyOf"][0]["enum"]:
        deadline -= 1
        httpx.get(f"{stack.url}/api/v1/health")  # the catalog refreshes on its own; give it time
    assert "acme" in provider_schema(api)["anyOf"][0]["enum"]
    accepted = api.post("/api/v1/images/generate", json={"prompt": "x", "provider": "acme"})
    assert accepted.status_code == 202, accepted.text
    r = redis.Redis.from_url(stack.settings.redis_url or "")
    assert r.get(keys.lane_depth("acme", "normal")) == b"1"


def test_a_manifest_provider_needs_its_start_url(api: httpx.Client) -> None:
    manifest = {
        "id": "half",
        "name": "Half",
        "version": "1.0.0",
        "provider": "half",
        "matches": ["https://half.example/*"],
        "js": ["driver.js"],
    }
    files = {"driver.js": base64.b64encode(b"void 0;").decode()}
    reply = api.put(
        "/api/v1/addons/half/versions/1.0.0", json={"manifest": manifest, "files": files}
    )
    assert reply.status_code == 422 and "startUrl" in reply.text


def test_auto_and_lists_are_routed_by_health_and_capacity(api: httpx.Client, stack: Stack) -> None:
    assert routing.pick(["chatgpt", "sandbox"], degraded=set(), capacity={"sandbox"}) == "sandbox"
    assert routing.pick(["chatgpt", "sandbox"], degraded={"chatgpt"}, capacity=set()) == "sandbox"
    assert routing.pick(["chatgpt"], degraded={"chatgpt"}, capacity=set()) == "chatgpt"
    assert routing.next_candidate(["a", "b", "c"], tried={"a"}, degraded={"b"}) == "c"
    # no failover to a provider nobody serves now: the job stays and retries where it is
    assert routing.next_candidate(["a", "b", "c"], {"a"}, set(), capacity={"a"}) is None
    assert routing.next_candidate(["a", "b", "c"], {"a"}, set(), capacity={"c"}) == "c"
    # no agent has a slot: the first healthy candidate; a degraded one is skipped
    r = redis.Redis.from_url(stack.settings.redis_url or "")
    r.hset(keys.provider_health("gemini"), mapping={"status": "degraded"})
    try:
        job = api.post(
            "/api/v1/images/generate",
            json={"prompt": "routed", "provider": ["gemini", "chatgpt", "sandbox"]},
        ).json()["jobId"]
        record = api.get(f"/api/v1/images/status/{job}").json()
        assert record["provider"] == "chatgpt"
        assert record["providers"] == ["gemini", "chatgpt", "sandbox"]
        auto = api.post("/api/v1/images/generate", json={"prompt": "a", "provider": "auto"})
        first = api.get(f"/api/v1/images/status/{auto.json()['jobId']}").json()
        assert first["provider"] == "sandbox" and "gemini" in first["providers"]
        health = api.get("/api/v1/health").json()["providers"]
        assert health["gemini"]["status"] == "degraded" and health["sandbox"]["status"] == "unknown"
    finally:
        r.delete(keys.provider_health("gemini"))


def test_job_error_codes_are_exported_with_the_bridge_schema() -> None:
    exported = json_schema()["$defs"]["JobErrorCode"]["enum"]
    assert exported == [c.value for c in JobErrorCode]
    for code in ("CONTENT_REFUSED", "PROVIDER_RATE_LIMITED", "PROVIDER_LOGGED_OUT", "TIMEOUT"):
        assert code in exported
    driver = (ADDONS / "sandbox" / "driver.js").read_text()
    assert set(re.findall(r'fail\("([A-Z_]+)"', driver)) <= set(exported)


async def test_max_image_bytes_holds_for_data_urls() -> None:
    png = render_png("small")
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    image = CapturedImage(url="blob:x", data_url=url)
    data, kind = await fetch_bytes(None, image, len(png))  # type: ignore[arg-type]
    assert data == png and kind == "image/png"
    with pytest.raises(GenerationFailed, match="over the"):
        await fetch_bytes(None, image, len(png) - 1)  # type: ignore[arg-type]
    huge = CapturedImage(url="data:image/png;base64," + "A" * 8_000_000)
    with pytest.raises(GenerationFailed, match="over the"):
        await fetch_bytes(None, huge, 1024 * 1024)  # type: ignore[arg-type]
