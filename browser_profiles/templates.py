"""The template profile: "Allow User Scripts" already on, prepared once, copied per agent.

Turning the toggle on goes through `chrome://extensions` (~1.5 s and a WebUI renderer on every
new profile). A template does that once; new agent profiles are copies of it
(`browser_profiles.profiles`) and start with `chrome.userScripts` already defined.

    template = await ensure_template(
        playwright, chromium=settings.chromium, extension_dir=EXTENSION_DIR,
        template_dir=settings.template_dir,
    )

`ensure_template` is idempotent: the template's stamp (`semantest-template.json`) records what
it was prepared for (extension digest and path, Chromium path and version); when the stamp
matches, nothing is launched. Agents starting together serialise on `<template_dir>.lock`
(an flock, released by the kernel if its holder dies): one prepares, the others wait for it and
then find the stamp matching. A template is built in a staging folder and swapped in whole, so
a crash mid-preparation never leaves a half-made template behind the stamp.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from filelock import Timeout, UnixFileLock
from playwright.async_api import Playwright

from browser_profiles.extension import (
    drop_stale_extension_code,
    enable_user_scripts,
    extension_digest,
    launch_args,
    service_worker,
    user_scripts_enabled_in_prefs,
)

log = logging.getLogger(__name__)

#: The template's record of what it was prepared for.
TEMPLATE_STAMP = "semantest-template.json"
#: Bumped when the way templates are made changes, so old ones are prepared again.
TEMPLATE_FORMAT = 1
#: How long an agent waits for another one preparing the same template.
TEMPLATE_LOCK_TIMEOUT_S = 120.0
#: Chromium's single-instance markers: they name the process that had the profile open.
SINGLETON_FILES = ("SingletonLock", "SingletonSocket", "SingletonCookie")
#: What a copy must not share with its template or another profile: single-instance markers,
#: crash dumps, session restore and caches Chromium rebuilds by itself (found in real profiles
#: of Chromium 156). Relative to the profile root.
UNSHARED = (
    *SINGLETON_FILES,
    "Crash Reports",
    "Crashpad",
    "BrowserMetrics",
    "GrShaderCache",
    "GraphiteDawnCache",
    "ShaderCache",
    "GPUPersistentCache",
    "component_crx_cache",
    "Default/Cache",
    "Default/Code Cache",
    "Default/GPUCache",
    "Default/DawnGraphiteCache",
    "Default/DawnWebGPUCache",
    "Default/Sessions",
    "Default/Session Storage",
)


class TemplateError(RuntimeError):
    """The template could not be prepared (or another agent took too long preparing it)."""


@functools.lru_cache(maxsize=8)
def chromium_version(chromium: str) -> str:
    """`chromium --version` (~50 ms, once per process and binary)."""
    try:
        done = subprocess.run(
            [chromium, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TemplateError(f"cannot run {chromium} --version: {exc}") from exc
    return done.stdout.strip() or f"unknown (exit {done.returncode})"


def template_identity(chromium: str, extension_dir: Path) -> dict[str, Any]:
    """What a template is valid for; compared with its stamp."""
    return {
        "format": TEMPLATE_FORMAT,
        "extensionDigest": extension_digest(extension_dir),
        "extensionDir": str(extension_dir),
        "chromium": chromium,
        "chromiumVersion": chromium_version(chromium),
    }


def read_stamp(template_dir: Path) -> dict[str, Any] | None:
    """The template's stamp, or None when it has none (or an unreadable one)."""
    try:
        stamp = json.loads((template_dir / TEMPLATE_STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def stamp_matches(template_dir: Path, identity: dict[str, Any]) -> bool:
    """Whether the template was prepared for exactly `identity`."""
    stamp = read_stamp(template_dir)
    return stamp is not None and all(stamp.get(k) == v for k, v in identity.items())


def template_lock(template_dir: Path) -> UnixFileLock:
    """The lock serialising preparation of (and copies from) one template."""
    template_dir.parent.mkdir(parents=True, exist_ok=True)
    path = template_dir.with_name(template_dir.name + ".lock")
    return UnixFileLock(str(path), thread_local=False)


async def acquire(lock: UnixFileLock, timeout_s: float) -> None:
    """Take `lock` without blocking the event loop; TemplateError after `timeout_s`."""
    try:
        await asyncio.to_thread(lock.acquire, timeout_s)
    except Timeout:
        raise TemplateError(f"{lock.lock_file} still held after {timeout_s:.0f} s") from None


def strip_unshared(profile_dir: Path) -> list[str]:
    """Remove what must not travel with a copy (see UNSHARED); returns what was removed."""
    removed = []
    for relative in UNSHARED:
        path = profile_dir / relative
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        removed.append(relative)
    return removed


async def ensure_template(
    playwright: Playwright, *, chromium: str, extension_dir: Path, template_dir: Path
) -> Path:
    """Prepare the template profile unless its stamp already matches; return its path.

    Preparing launches Chromium on a staging folder with the extension and the agents' flags,
    turns "Allow User Scripts" on, waits until `chrome.userScripts` is defined in the service
    worker, closes Chromium cleanly (preferences are written on close), checks the toggle is in
    the stored preferences, strips what must not be shared, writes the stamp and swaps the
    folder in. ~2 s, once per extension build and Chromium version.
    """
    identity = await asyncio.to_thread(template_identity, chromium, extension_dir)
    if stamp_matches(template_dir, identity):
        return template_dir
    lock = template_lock(template_dir)
    await acquire(lock, TEMPLATE_LOCK_TIMEOUT_S)
    try:
        if stamp_matches(template_dir, identity):  # another agent prepared it while we waited
            return template_dir
        await _prepare(playwright, chromium, extension_dir, template_dir, identity)
    finally:
        lock.release()
    return template_dir


async def _prepare(
    playwright: Playwright,
    chromium: str,
    extension_dir: Path,
    template_dir: Path,
    identity: dict[str, Any],
) -> None:
    started = time.perf_counter()
    staging = template_dir.with_name(f"{template_dir.name}.new-{os.getpid()}")
    await asyncio.to_thread(shutil.rmtree, staging, True)
    await asyncio.to_thread(
        drop_stale_extension_code, staging, extension_dir, identity["extensionDigest"]
    )
    context = await playwright.chromium.launch_persistent_context(
        str(staging), executable_path=chromium, headless=True, args=launch_args(extension_dir)
    )
    try:
        worker = await service_worker(context)
        clicked = await enable_user_scripts(context, worker)
    finally:
        await context.close()
    if not user_scripts_enabled_in_prefs(staging, extension_dir):
        await asyncio.to_thread(shutil.rmtree, staging, True)
        raise TemplateError(f"Allow User Scripts did not persist in {staging}")
    removed = await asyncio.to_thread(strip_unshared, staging)
    took = time.perf_counter() - started
    stamp = identity | {"preparedAt": time.time(), "prepareS": round(took, 3), "clicked": clicked}
    (staging / TEMPLATE_STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    await asyncio.to_thread(_swap_in, staging, template_dir)
    log.info("template %s prepared in %.2f s (stripped %s)", template_dir, took, removed)


def _swap_in(staging: Path, template_dir: Path) -> None:
    old = template_dir.with_name(f"{template_dir.name}.old-{os.getpid()}")
    if template_dir.exists():
        template_dir.rename(old)
    staging.rename(template_dir)
    shutil.rmtree(old, ignore_errors=True)
