"""Launch Chromium with the Semantest extension and bring it to "ready".

Ready means: the extension's service worker is up, "Allow User Scripts" is on (clicked through
`chrome://extensions` the first time; the profile remembers it), and the worker has been told
where the controller and the bridge are, registered the addons and connected back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles.os
from playwright.async_api import BrowserContext, Playwright, Worker

from extension_bridge import EXTENSION_DIR
from semantest.config import CHROMIUM_ARGS

log = logging.getLogger(__name__)

#: How the service worker is told where to connect (see extension/service_worker.js).
CONFIGURE_JS = "cfg => self.semantest.configure(cfg)"


@dataclass
class ExtensionBrowser:
    """A running persistent context with the extension configured."""

    context: BrowserContext
    worker: Worker
    extension_id: str
    configured: dict[str, Any]


async def launch(
    playwright: Playwright,
    *,
    chromium: str,
    profile_dir: Path,
    controller_url: str,
    bridge_url: str,
    extension_dir: Path = EXTENSION_DIR,
) -> ExtensionBrowser:
    """Launch Chromium on `profile_dir` with the extension and configure it."""
    started = time.perf_counter()
    await aiofiles.os.makedirs(profile_dir, exist_ok=True)
    await asyncio.to_thread(drop_stale_extension_code, profile_dir, extension_dir)
    context = await playwright.chromium.launch_persistent_context(
        str(profile_dir),
        executable_path=chromium,
        headless=True,
        args=[
            *CHROMIUM_ARGS,
            f"--disable-extensions-except={extension_dir}",
            f"--load-extension={extension_dir}",
        ],
        viewport={"width": 1280, "height": 900},
    )
    worker = await _service_worker(context)
    extension_id = worker.url.split("/")[2]
    if not await worker.evaluate("() => typeof chrome.userScripts !== 'undefined'"):
        await allow_user_scripts(context, extension_id)
        # The running worker sees the API as soon as the toggle flips; no restart needed.
        await worker.evaluate(
            """async () => {
                for (let i = 0; i < 100 && typeof chrome.userScripts === 'undefined'; i++)
                    await new Promise(r => setTimeout(r, 50));
            }"""
        )
    configured: dict[str, Any] = await worker.evaluate(
        CONFIGURE_JS, {"controllerUrl": controller_url, "bridgeUrl": bridge_url}
    )
    log.info(
        "browser ready in %.2f s (extension %s, addons %s)",
        time.perf_counter() - started,
        extension_id,
        [a["id"] for a in configured.get("addons", [])],
    )
    return ExtensionBrowser(context, worker, extension_id, configured)


def extension_digest(extension_dir: Path) -> str:
    """sha256 over the extension's files (names and bytes), to tell one build from another."""
    digest = hashlib.sha256()
    for path in sorted(p for p in extension_dir.rglob("*") if p.is_file()):
        digest.update(path.relative_to(extension_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def drop_stale_extension_code(profile_dir: Path, extension_dir: Path) -> bool:
    """Forget the profile's cached service-worker scripts when the extension changed.

    Chromium keeps an unpacked extension's service worker in `Default/Service Worker` and runs
    that copy on the next launch even when the files on disk are newer. The extension's stored
    settings and the "Allow User Scripts" toggle live elsewhere in the profile and survive.
    Returns True when the cache was dropped.
    """
    stamp = profile_dir / "semantest-extension.sha256"
    current = extension_digest(extension_dir)
    if stamp.exists() and stamp.read_text().strip() == current:
        return False
    shutil.rmtree(profile_dir / "Default" / "Service Worker", ignore_errors=True)
    stamp.write_text(current + "\n")
    return True


async def allow_user_scripts(context: BrowserContext, extension_id: str) -> None:
    """Turn on the per-extension "Allow User Scripts" toggle (stored in the profile)."""
    page = await context.new_page()
    try:
        await page.goto(f"chrome://extensions/?id={extension_id}")
        toggle = page.locator("#allow-user-scripts")
        await toggle.wait_for(state="attached")
        # A cr-toggle, not an <input>: its state is the element's `checked` property.
        if not await toggle.evaluate("e => !!e.checked"):
            await toggle.click()
        log.info("turned on Allow User Scripts for %s", extension_id)
    finally:
        await page.close()


async def _service_worker(context: BrowserContext) -> Worker:
    for worker in context.service_workers:
        if worker.url.startswith("chrome-extension://"):
            return worker
    found: Worker = await context.wait_for_event(
        "serviceworker", predicate=lambda w: w.url.startswith("chrome-extension://")
    )
    return found
