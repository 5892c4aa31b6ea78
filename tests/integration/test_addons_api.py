"""Addon serving: index, source, strong ETag, 304s, version pin, 404s."""

from __future__ import annotations

import hashlib

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_index_lists_the_sandbox_addon(anon: httpx.Client) -> None:
    reply = anon.get("/api/v1/addons")
    assert reply.status_code == 200
    (entry,) = [a for a in reply.json()["addons"] if a["id"] == "sandbox"]
    assert entry["world"] == "USER_SCRIPT" and entry["url"] == "/api/v1/addons/sandbox"
    assert any("/chat" in m for m in entry["matches"])
    assert entry["integrity"].startswith("sha384-")


def test_source_has_a_strong_etag_and_revalidates_with_304(anon: httpx.Client) -> None:
    first = anon.get("/api/v1/addons/sandbox")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/javascript")
    etag = first.headers["etag"]
    assert etag == '"' + hashlib.sha256(first.content).hexdigest() + '"'  # strong, content hash
    index = anon.get("/api/v1/addons").json()["addons"]
    assert next(a for a in index if a["id"] == "sandbox")["etag"] == etag
    again = anon.get("/api/v1/addons/sandbox", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = anon.get("/api/v1/addons/sandbox", headers={"If-None-Match": '"stale"'})
    assert other.status_code == 200 and other.content == first.content
    since = anon.get(
        "/api/v1/addons/sandbox", headers={"If-Modified-Since": first.headers["last-modified"]}
    )
    assert since.status_code == 304


def test_unknown_addon_and_version_are_404(anon: httpx.Client) -> None:
    for url in ("/api/v1/addons/nope", "/api/v1/addons/sandbox?version=9.9.9"):
        reply = anon.get(url)
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "ADDON_NOT_FOUND"
    index = anon.get("/api/v1/addons").json()["addons"]
    version = next(a["version"] for a in index if a["id"] == "sandbox")
    assert anon.get(f"/api/v1/addons/sandbox?version={version}").status_code == 200


def test_fast_path_answers_carry_the_rate_limit_headers(anon: httpx.Client) -> None:
    """Rate limits on (the default): the lean path takes from the same per-IP addon bucket."""
    first = anon.get("/api/v1/addons/sandbox")
    second = anon.get("/api/v1/addons/sandbox", headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 304
    for reply in (first, second):
        assert int(reply.headers["ratelimit-limit"]) > 0
    assert int(second.headers["ratelimit-remaining"]) < int(first.headers["ratelimit-remaining"])
