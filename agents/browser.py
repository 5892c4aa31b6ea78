"""Launch Chromium with the Semantest extension and bring it to "ready".

Ready means: the extension's service worker is up, "Allow User Scripts" is on, and the worker
has been told where the controller and the bridge are, registered the addons and connected back.
The toggle is normally on already: agent profiles are copies of a prepared template
(`browser_profiles`). On a profile without it `launch` still clicks it through
`chrome://extensions` as a fallback (slow; the profile remembers it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
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
    "drop_stale_extension_code",
    "extension_digest",
    "launch",
]

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
    """Launch Chromium on `profile_dir` with the extension and configure it.

    `profile_dir` should be held through `browser_profiles.open_profile` (lock + template copy);
    any folder works, at the price of the toggle click on a new one.
    """
    started = time.perf_counter()
    await aiofiles.os.makedirs(profile_dir, exist_ok=True)
    await asyncio.to_thread(drop_stale_extension_code, profile_dir, extension_dir)
    context = await playwright.chromium.launch_persistent_context(
        str(profile_dir),
        executable_path=chromium,
        headless=True,
        args=launch_args(extension_dir),
        viewport={"width": 1280, "height": 900},
    )
    worker = await service_worker(context)
    extension_id = worker.url.split("/")[2]
    if await enable_user_scripts(context, worker):
        log.warning("profile %s had Allow User Scripts off: clicked it (slow path)", profile_dir)
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
