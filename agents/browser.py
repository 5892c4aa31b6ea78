"""Launch Chromium with the Semantest extension and bring it to "ready".

Two steps. `launch_extension`: the extension's service worker is up and "Allow User Scripts" is
on; nothing else is needed for that (no controller, no bridge). `configure`: the worker is told
where the controller and the bridge are, registers the addons and connects back. `launch` is
both, what an agent does.
The toggle is normally on already: agent profiles are copies of a prepared template
(`browser_profiles`). On a profile without it `launch` still clicks it through
`chrome://extensions` as a fallback (slow; the profile remembers it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles.os
from playwright.async_api import BrowserContext, Playwright, Worker

from browser_profiles.extension import (
    allow_user_scripts,
    drop_stale_extension_code,
    enable_user_scripts,
    extension_digest,
    launch_args,
    service_worker,
)
from extension_bridge import EXTENSION_DIR

__all__ = [
    "CONFIGURE_JS",
    "ExtensionBrowser",
    "allow_user_scripts",
    "configure",
    "drop_stale_extension_code",
    "extension_digest",
    "launch",
    "launch_extension",
]

log = logging.getLogger(__name__)

#: Hosts never sent through a browser proxy (Chromium also bypasses loopback on its own; the
#: request client needs telling).
LOOPBACK = "127.0.0.1,localhost,[::1]"
#: How the service worker is told where to connect (see extension/service_worker.js).
CONFIGURE_JS = "cfg => self.semantest.configure(cfg)"


@dataclass
class ExtensionBrowser:
    """A running persistent context with the extension loaded and user scripts allowed.

    `configured` is the service worker's answer to `configure` (empty until then).
    """

    context: BrowserContext
    worker: Worker
    extension_id: str
    configured: dict[str, Any] = field(default_factory=dict)


async def launch_extension(
    playwright: Playwright,
    *,
    chromium: str,
    profile_dir: Path,
    extension_dir: Path = EXTENSION_DIR,
    headless: bool = True,
    proxy: str | None = None,
    ignore_https_errors: bool = False,
) -> ExtensionBrowser:
    """Launch Chromium on `profile_dir` with the extension, "Allow User Scripts" on.

    `proxy` carries the pages' traffic and the context's request client (image downloads)
    alike; loopback (the controller, the bridge, the sandbox) never goes through it.
    `ignore_https_errors` accepts any certificate: only for replicas (`sandbox/replicas`).

    Needs no controller and no bridge: the extension is loaded and its service worker runs, but
    it has registered no addons until `configure` tells it where they are. `profile_dir` should
    be held through `browser_profiles.open_profile` (lock + template copy); any folder works, at
    the price of the toggle click on a new one.
    """
    await aiofiles.os.makedirs(profile_dir, exist_ok=True)
    await asyncio.to_thread(drop_stale_extension_code, profile_dir, extension_dir)
    context = await playwright.chromium.launch_persistent_context(
        str(profile_dir),
        executable_path=chromium,
        headless=headless,
        args=launch_args(extension_dir),
        viewport={"width": 1280, "height": 900},
        proxy={"server": proxy, "bypass": LOOPBACK} if proxy else None,
        ignore_https_errors=ignore_https_errors,
    )
    try:
        worker = await service_worker(context)
        if await enable_user_scripts(context, worker):
            log.warning("profile %s had Allow User Scripts off: clicked it", profile_dir)
    except BaseException:
        await context.close()
        raise
    return ExtensionBrowser(context, worker, worker.url.split("/")[2])


async def configure(browser: ExtensionBrowser, *, controller_url: str, bridge_url: str) -> None:
    """Tell the service worker where the controller (addons) and the bridge (jobs) are.

    It registers the controller's addons and connects to the bridge before this returns.
    """
    browser.configured = await browser.worker.evaluate(
        CONFIGURE_JS, {"controllerUrl": controller_url, "bridgeUrl": bridge_url}
    )


async def launch(
    playwright: Playwright,
    *,
    chromium: str,
    profile_dir: Path,
    controller_url: str,
    bridge_url: str,
    extension_dir: Path = EXTENSION_DIR,
    proxy: str | None = None,
    ignore_https_errors: bool = False,
) -> ExtensionBrowser:
    """`launch_extension` then `configure`: the browser an agent runs jobs in."""
    started = time.perf_counter()
    browser = await launch_extension(
        playwright,
        chromium=chromium,
        profile_dir=profile_dir,
        extension_dir=extension_dir,
        proxy=proxy,
        ignore_https_errors=ignore_https_errors,
    )
    try:
        await configure(browser, controller_url=controller_url, bridge_url=bridge_url)
    except BaseException:
        await browser.context.close()
        raise
    log.info(
        "browser ready in %.2f s (extension %s, addons %s)",
        time.perf_counter() - started,
        browser.extension_id,
        [a["id"] for a in browser.configured.get("addons", [])],
    )
    return browser
