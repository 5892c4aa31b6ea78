"""Profiles: stale extension code, template stamps, copies, and the crash-safe profile lock.

The lock tests use real processes: a holder in another process, refused with its pid named,
and a SIGKILLed holder whose lock the kernel hands over at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from browser_profiles import ProfileLock, ProfileLocked, drop_stale_extension_code
from browser_profiles import extension_digest as digest_from_package
from browser_profiles.extension import extension_digest
from browser_profiles.profiles import PROFILE_STAMP, _copy, clear_stale_singleton, read_holder
from browser_profiles.templates import (
    TEMPLATE_STAMP,
    chromium_version,
    ensure_template,
    stamp_matches,
    strip_unshared,
    template_identity,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


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


def fake_chromium(path: Path, version: str) -> str:
    """An executable that answers `--version` like Chromium (no browser needed here)."""
    path.write_text(f"#!/bin/sh\necho '{version}'\n")
    path.chmod(0o755)
    return str(path)


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
    assert extension_digest(a) == extension_digest(b) == digest_from_package(b)
    (b / "service_worker.js").rename(b / "worker.js")
    assert extension_digest(a) != extension_digest(b)
    (a / "service_worker.js").write_text("y")
    assert extension_digest(a) != extension_digest(make_extension(tmp_path / "c", "x"))


def test_agents_browser_uses_the_moved_functions() -> None:
    from agents import browser

    assert browser.drop_stale_extension_code is drop_stale_extension_code
    assert browser.extension_digest is extension_digest


def test_template_with_matching_stamp_launches_nothing(tmp_path: Path) -> None:
    chromium_version.cache_clear()
    extension = make_extension(tmp_path / "ext", "x")
    chromium = fake_chromium(tmp_path / "chromium", "Chromium 1.2.3")
    template = tmp_path / "profiles" / "_template"
    template.mkdir(parents=True)
    identity = template_identity(chromium, extension)
    assert identity["chromiumVersion"] == "Chromium 1.2.3"
    (template / TEMPLATE_STAMP).write_text(__import__("json").dumps(identity | {"prepareS": 2}))
    assert stamp_matches(template, identity)
    # `None` for Playwright: launching anything here would raise.
    got = asyncio.run(
        ensure_template(None, chromium=chromium, extension_dir=extension, template_dir=template)  # type: ignore[arg-type]
    )
    assert got == template

    (extension / "service_worker.js").write_text("changed")
    assert not stamp_matches(template, template_identity(chromium, extension))
    chromium_version.cache_clear()
    fake_chromium(tmp_path / "chromium", "Chromium 1.2.4")
    make_extension(extension, "x")
    assert not stamp_matches(template, template_identity(chromium, extension))


def test_copy_leaves_out_what_must_not_be_shared(tmp_path: Path) -> None:
    template = tmp_path / "_template"
    (template / "Default" / "Cache" / "Cache_Data").mkdir(parents=True)
    (template / "Default" / "Code Cache" / "js").mkdir(parents=True)
    (template / "GrShaderCache").mkdir()
    (template / "Crashpad" / "reports").mkdir(parents=True)
    (template / "Default" / "Preferences").write_text('{"extensions": {}}')
    (template / "Default" / "Local Extension Settings").mkdir()
    (template / "SingletonLock").symlink_to("somehost-123")
    (template / "SingletonCookie").symlink_to("456")
    (template / TEMPLATE_STAMP).write_text('{"format": 1}')

    profile = tmp_path / "a1"
    assert _copy(template, profile) is True
    assert (profile / "Default" / "Preferences").read_text() == '{"extensions": {}}'
    assert (profile / "Default" / "Local Extension Settings").is_dir()
    for gone in ("Default/Cache", "Default/Code Cache", "GrShaderCache", "Crashpad"):
        assert not (profile / gone).exists(), gone
    assert not (profile / "SingletonLock").is_symlink()
    assert not (profile / TEMPLATE_STAMP).exists()
    assert '"format": 1' in (profile / PROFILE_STAMP).read_text()
    assert not list(tmp_path.glob("a1.copy-*"))
    assert _copy(template, profile) is False  # an existing profile is never overwritten

    assert "SingletonLock" in strip_unshared(template)
    assert not (template / "SingletonLock").is_symlink()


HOLD = """
import sys, time
from pathlib import Path
from browser_profiles import ProfileLock
lock = ProfileLock(Path(sys.argv[1]), owner="agent holder-1")
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def start_holder(profile: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(profile)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    profile = tmp_path / "profiles" / "a1"
    holder = start_holder(profile)
    try:
        with pytest.raises(ProfileLocked) as refused:
            ProfileLock(profile, owner="agent a1").acquire()
        message = str(refused.value)
        assert str(profile) in message
        assert f"pid {holder.pid}" in message
        assert "agent holder-1" in message and socket.gethostname() in message
        assert refused.value.holder is not None and refused.value.holder.pid == holder.pid

        started = time.monotonic()
        with pytest.raises(ProfileLocked):
            ProfileLock(profile).acquire(timeout_s=0.3)  # waiting does not help while it lives
        assert time.monotonic() - started >= 0.3
    finally:
        holder.kill()
        holder.wait()


def test_sigkilled_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    profile = tmp_path / "profiles" / "a1"
    holder = start_holder(profile)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock = ProfileLock(profile, owner="agent successor")
    started = time.monotonic()
    lock.acquire()  # no waiting, no clean-up: the kernel dropped the dead holder's flock
    assert time.monotonic() - started < 0.5
    recorded = read_holder(lock.path)
    assert recorded is not None and recorded.pid == os.getpid()
    assert recorded.owner == "agent successor"
    lock.release()
    assert read_holder(lock.path) is None  # a released lock names nobody
    with ProfileLock(profile) as again:  # and can be taken again
        assert again.held


def test_stale_singleton_markers_are_cleared_and_orphans_killed(tmp_path: Path) -> None:
    profile = tmp_path / "a1"
    profile.mkdir()
    # Another machine's marker: nothing to kill, the markers go.
    (profile / "SingletonLock").symlink_to("otherhost-99999")
    (profile / "SingletonSocket").symlink_to("/tmp/nowhere/SingletonSocket")
    assert clear_stale_singleton(profile) is None
    assert not os.path.lexists(profile / "SingletonLock")
    assert not os.path.lexists(profile / "SingletonSocket")

    # A live process of this host that is not a Chromium on this profile is left alone.
    (profile / "SingletonLock").symlink_to(f"{socket.gethostname()}-{os.getpid()}")
    assert clear_stale_singleton(profile) is None

    # An orphaned "Chromium" still on this profile (a dead holder's) is killed.
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"--user-data-dir={profile}"]
    )
    try:
        # Until the child has exec'd it is a copy of pytest, without the flag in its cmdline.
        deadline = time.monotonic() + 10
        while f"--user-data-dir={profile}" not in psutil.Process(orphan.pid).cmdline():
            assert time.monotonic() < deadline, "the stand-in Chromium did not start"
            time.sleep(0.01)
        (profile / "SingletonLock").symlink_to(f"{socket.gethostname()}-{orphan.pid}")
        assert clear_stale_singleton(profile) == orphan.pid
        # psutil reaped it (it is our child here), so only its absence can be checked.
        orphan.wait(5)
        assert not psutil.pid_exists(orphan.pid)
    finally:
        orphan.kill()
        orphan.wait()
