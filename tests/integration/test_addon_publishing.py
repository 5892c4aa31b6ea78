"""Publishing, channels, rollback, pinned and content-addressed delivery, resolve, allowlists and
install reports, against real controllers (two processes' worth on one Redis database)."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from semantest.config import Settings
from semantest.stack import free_port
from tests.conftest import ADMIN_KEY, serve_controller

pytestmark = pytest.mark.integration

DB = 60


@pytest.fixture(scope="module")
def db_settings(api_settings: Settings, redis_url: str) -> Settings:
    url = f"{redis_url.rsplit('/', 1)[0]}/{DB}"
    redis.Redis.from_url(url).flushdb()
    return api_settings.model_copy(update={"redis_url": url, "port": free_port()})


@pytest.fixture(scope="module")
def base(db_settings: Settings) -> Iterator[str]:
    with serve_controller(db_settings) as url:
        yield url


@pytest.fixture
def api(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    ) as c:
        yield c


@pytest.fixture
def anon(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=10) as c:
        yield c


def manifest(addon_id: str, version: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": addon_id,
        "name": addon_id.title(),
        "version": version,
        "matches": extra.pop("matches", ["https://example.com/*"]),
        "js": ["driver.js"],
        **extra,
    }


def publish(
    api: httpx.Client, addon_id: str, version: str, code: str | None = None, **extra: Any
) -> httpx.Response:
    body = {
        "manifest": manifest(addon_id, version, **extra),
        "files": {
            "driver.js": code
            if code is not None
            else f"SemantestAddon.provide('{addon_id}', '{version}');\n"
        },
    }
    return api.put(f"/api/v1/addons/{addon_id}/versions/{version}", json=body)


def sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def test_publish_is_immutable_and_idempotent(api: httpx.Client) -> None:
    first = publish(api, "immut", "1.0.0")
    assert first.status_code == 201, first.text
    assert first.json()["channels"]["stable"] == "1.0.0"
    again = publish(api, "immut", "1.0.0")
    assert again.status_code == 200 and again.json()["created"] is False
    other = publish(api, "immut", "1.0.0", code="console.log('other bytes');\n")
    assert other.status_code == 409 and other.json()["error"]["code"] == "CONFLICT"
    assert "immutable" in other.json()["error"]["message"]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"manifest": {"matches": ["example.com"]}}, "manifest.matches", "not a match pattern"),
        ({"manifest": {"version": "1.0"}}, "manifest.version", "semver"),
        (
            {"manifest": {"requires": {"nolib": "^1.0.0"}}},
            "manifest.requires.nolib",
            "bad@1.0.0 → nolib ^1.0.0",
        ),
        ({"files": {}}, "files.driver.js", "not sent"),
        ({"files": {"driver.js": "ok();", "extra.js": "x"}}, "files.extra.js", "not listed"),
        ({"files": {"driver.js": "ok();\nok();\nfunction (\n"}}, "files.driver.js", "line 3"),
        ({"manifest": {"id": "other"}}, "manifest.id", "differs"),
    ],
)
def test_bad_publishes_are_422_naming_the_field(
    api: httpx.Client, change: dict[str, Any], field: str, words: str
) -> None:
    body: dict[str, Any] = {"manifest": manifest("bad", "1.0.0"), "files": {"driver.js": "ok();\n"}}
    body["manifest"].update(change.get("manifest", {}))
    if "files" in change:
        body["files"] = change["files"]
    reply = api.put("/api/v1/addons/bad/versions/1.0.0", json=body)
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in [d["field"] for d in error["details"]]
    assert words in error["message"] + " ".join(d["reason"] for d in error["details"])


def test_publish_needs_the_publish_scope(api: httpx.Client, anon: httpx.Client) -> None:
    reader = api.post("/api/v1/admin/keys", json={"tenant": "readers", "scopes": ["addons:read"]})
    assert reader.status_code == 201, reader.text
    key = reader.json()["key"]
    body = {"manifest": manifest("scoped", "1.0.0"), "files": {"driver.js": "ok();\n"}}
    refused = anon.put(
        "/api/v1/addons/scoped/versions/1.0.0",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    )
    assert refused.status_code == 403 and "addons:publish" in refused.text
    assert anon.put("/api/v1/addons/scoped/versions/1.0.0", json=body).status_code == 401


def test_dependencies_bundle_first_with_a_source_url_per_part(
    api: httpx.Client, anon: httpx.Client
) -> None:
    for v in ("1.0.0", "1.2.0", "2.0.0"):
        assert publish(api, "deplib", v).status_code == 201
    reply = publish(api, "depapp", "1.0.0", requires={"deplib": "^1.0.0"})
    assert reply.status_code == 201, reply.text
    assert reply.json()["resolved"] == {"deplib": "1.2.0"}
    body = anon.get("/api/v1/addons/depapp").content.decode()
    assert body.index("'deplib', '1.2.0'") < body.index("'depapp', '1.0.0'")
    assert "//# sourceURL=semantest-addon://deplib/1.2.0/bundle.js" in body
    assert "//# sourceURL=semantest-addon://depapp/1.0.0/bundle.js" in body
    assert publish(api, "deplib", "1.9.0").status_code == 201  # a locked version never changes
    assert anon.get("/api/v1/addons/depapp?version=1.0.0").content.decode() == body


def test_pinned_unpinned_and_content_addressed_caching(
    api: httpx.Client, anon: httpx.Client
) -> None:
    assert publish(api, "cache", "1.0.0").status_code == 201
    unpinned = anon.get("/api/v1/addons/cache")
    assert unpinned.status_code == 200 and unpinned.headers["cache-control"] == "no-cache"
    etag = unpinned.headers["etag"]
    assert etag == f'"{hashlib.sha256(unpinned.content).hexdigest()}"'
    assert unpinned.headers["x-addon-integrity"] == sri(unpinned.content)
    pinned = anon.get("/api/v1/addons/cache?version=1.0.0")
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert pinned.content == unpinned.content
    for url in ("/api/v1/addons/cache", "/api/v1/addons/cache?version=1.0.0"):
        assert anon.get(url, headers={"If-None-Match": etag}).status_code == 304
        since = anon.get(url, headers={"If-Modified-Since": unpinned.headers["last-modified"]})
        assert since.status_code == 304 and since.content == b""
    index = anon.get("/api/v1/addons")
    entry = next(a for a in index.json()["addons"] if a["id"] == "cache")
    assert entry["etag"] == etag and entry["integrity"] == sri(unpinned.content)
    by_hash = anon.get(entry["bundleUrl"])
    assert by_hash.content == unpinned.content
    assert by_hash.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert (
        index.headers["etag"]
        and anon.get("/api/v1/addons", headers={"If-None-Match": index.headers["etag"]}).status_code
        == 304
    )
    for url in (
        "/api/v1/addons/nope",
        "/api/v1/addons/cache?version=9.9.9",
        "/api/v1/addons/bundles/" + "0" * 64 + ".js",
    ):
        missing = anon.get(url)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "ADDON_NOT_FOUND"


def test_channels_promote_and_rollback(api: httpx.Client, anon: httpx.Client) -> None:
    assert publish(api, "chan", "1.0.0").status_code == 201
    assert publish(api, "chan", "1.1.0").status_code == 201
    assert publish(api, "chan", "2.0.0-beta.1", channel="beta").status_code == 201

    def on(channel: str) -> str:
        reply = anon.get(f"/api/v1/addons?channel={channel}").json()["addons"]
        return str(next(a["version"] for a in reply if a["id"] == "chan"))

    assert (on("stable"), on("beta")) == ("1.1.0", "2.0.0-beta.1")
    assert anon.get("/api/v1/addons/chan?channel=beta").headers["x-addon-version"] == "2.0.0-beta.1"
    promoted = api.post(
        "/api/v1/addons/chan/promote", json={"version": "2.0.0-beta.1", "channel": "stable"}
    )
    assert promoted.status_code == 200 and promoted.json()["channels"]["stable"] == "2.0.0-beta.1"
    assert on("stable") == "2.0.0-beta.1"
    back = api.post("/api/v1/addons/chan/rollback", json={"channel": "stable"})
    assert back.status_code == 200 and back.json()["channels"]["stable"] == "1.1.0"
    assert (
        api.post("/api/v1/addons/chan/rollback", json={"channel": "stable"}).json()["channels"][
            "stable"
        ]
        == "1.0.0"
    )
    none_left = api.post("/api/v1/addons/chan/rollback", json={"channel": "stable"})
    assert none_left.status_code == 409 and none_left.json()["error"]["code"] == "CONFLICT"
    missing = api.post(
        "/api/v1/addons/chan/promote", json={"version": "9.0.0", "channel": "stable"}
    )
    assert missing.status_code == 404
    bad = api.post("/api/v1/addons/chan/promote", json={"version": "1.0.0", "channel": "nightly"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "channel"
    history = api.get("/api/v1/addons/chan/versions").json()
    assert (
        history["history"]["stable"] == ["1.0.0"]
        and history["versions"][0]["version"] == "2.0.0-beta.1"
    )


def test_published_addons_reach_other_processes_and_survive_a_restart(
    api: httpx.Client, db_settings: Settings
) -> None:
    other = db_settings.model_copy(update={"port": free_port()})
    with serve_controller(other) as url:
        assert publish(api, "spread", "1.0.0").status_code == 201
        deadline = time.monotonic() + 2
        while httpx.get(url + "/api/v1/addons/spread").status_code != 200:
            assert time.monotonic() < deadline, "the other process never served the new addon"
            time.sleep(0.05)
    with serve_controller(db_settings.model_copy(update={"port": free_port()})) as url:
        reply = httpx.get(url + "/api/v1/addons/spread")  # a fresh process, loaded from Redis
        assert reply.status_code == 200 and reply.headers["x-addon-version"] == "1.0.0"


def test_resolve_matches_as_chrome_does(api: httpx.Client, anon: httpx.Client) -> None:
    assert publish(api, "reslib", "1.0.0", matches=["https://nowhere.test/*"]).status_code == 201
    assert (
        publish(
            api, "resa", "1.0.0", matches=["*://*.resolve.test/*"], requires={"reslib": "^1"}
        ).status_code
        == 201
    )
    assert (
        publish(api, "resb", "1.0.0", matches=["https://resolve.test:8443/chat*"]).status_code
        == 201
    )
    url = "https://WWW.resolve.test:8443/chat?x=1#frag"
    described = anon.get(
        "/api/v1/addons/resolve", params={"url": url}, headers={"Accept": "application/json"}
    ).json()
    assert [a["id"] for a in described["addons"]] == ["resa"]  # www. is not resolve.test for resb
    bundle = anon.get("/api/v1/addons/resolve", params={"url": url})
    assert hashlib.sha256(bundle.content).hexdigest() == described["hash"]
    assert sri(bundle.content) == described["integrity"]
    assert bundle.content.decode().index("'reslib'") < bundle.content.decode().index("'resa'")
    both = anon.get(
        "/api/v1/addons/resolve",
        params={"url": "https://resolve.test:8443/chat"},
        headers={"Accept": "application/json"},
    )
    assert [a["id"] for a in both.json()["addons"]] == ["resa", "resb"]
    bad = anon.get("/api/v1/addons/resolve", params={"url": "not a url"})
    assert bad.status_code == 422


def test_tenant_allowlist_refuses_other_domains(api: httpx.Client) -> None:
    stored = api.put("/api/v1/addons/allowlist", json={"domains": ["*.resolve.test"]})
    assert stored.status_code == 200, stored.text
    try:
        ok = api.get("/api/v1/addons/resolve", params={"url": "https://a.resolve.test/"})
        assert ok.status_code == 200
        refused = api.get("/api/v1/addons/resolve", params={"url": "https://elsewhere.test/"})
        assert (
            refused.status_code == 403 and refused.json()["error"]["code"] == "DOMAIN_NOT_ALLOWED"
        )
        assert (
            api.put("/api/v1/addons/allowlist", json={"domains": ["bad host/"]}).status_code == 422
        )
    finally:
        api.put("/api/v1/addons/allowlist", json={"domains": []})


def test_install_heartbeats_show_who_runs_what(api: httpx.Client, anon: httpx.Client) -> None:
    beat = {
        "installId": "install-test-0001",
        "extensionVersion": "0.2.0",
        "addons": [{"id": "sandbox", "version": "0.2.0"}],
        "refused": [{"id": "chan", "version": "1.1.0", "reason": "integrity mismatch"}],
    }
    assert anon.post("/api/v1/installs/heartbeat", json=beat).status_code == 200
    assert (
        anon.post("/api/v1/installs/heartbeat", json={**beat, "installId": "x"}).status_code == 422
    )
    assert anon.get("/api/v1/installs").status_code == 401
    listed = api.get("/api/v1/installs").json()["installs"]
    mine = next(i for i in listed if i["installId"] == "install-test-0001")
    assert mine["addons"] == [{"id": "sandbox", "version": "0.2.0", "integrity": None}]
    assert mine["refused"][0]["reason"] == "integrity mismatch"
