"""The agent drops a profile's cached extension code exactly when the extension changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.browser import drop_stale_extension_code, extension_digest

pytestmark = pytest.mark.unit


def make_extension(root: Path, worker_js: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text('{"manifest_version": 3}')
    (root / "service_worker.js").write_text(worker_js)
    return root


def cached_worker(profile: Path) -> Path:
    cache = profile / "Default" / "Service Worker" / "ScriptCache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "index").write_text("old code")
    return cache


def test_cache_is_dropped_on_first_launch_and_on_change_only(tmp_path: Path) -> None:
    extension = make_extension(tmp_path / "ext", "console.log(1)")
    profile = tmp_path / "profile"
    cache = cached_worker(profile)
    settings = profile / "Default" / "Local Extension Settings"
    settings.mkdir(parents=True)
    assert drop_stale_extension_code(profile, extension) is True  # no stamp yet
    assert not cache.exists() and settings.exists()

    cache = cached_worker(profile)
    assert drop_stale_extension_code(profile, extension) is False  # same build
    assert cache.exists()

    (extension / "service_worker.js").write_text("console.log(2)")
    assert drop_stale_extension_code(profile, extension) is True  # new build
    assert not cache.exists() and settings.exists()


def test_digest_covers_names_and_bytes(tmp_path: Path) -> None:
    a = make_extension(tmp_path / "a", "x")
    b = make_extension(tmp_path / "b", "x")
    assert extension_digest(a) == extension_digest(b)
    (b / "service_worker.js").rename(b / "worker.js")
    assert extension_digest(a) != extension_digest(b)
