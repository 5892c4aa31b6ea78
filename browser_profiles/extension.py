"""What every profile user needs to know about the Semantest extension in Chromium.

The launch flags, the extension digest (one build from another), dropping a profile's cached
service-worker code when the build changed, and the "Allow User Scripts" toggle. Used by
`browser_profiles.templates`, `browser_profiles.login_desk` and `agents.browser`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from playwright.async_api import BrowserContext, Worker

from semantest.config import CHROMIUM_ARGS

log = logging.getLogger(__name__)

#: Written into a profile: the digest of the extension build its cached code belongs to.
EXTENSION_STAMP = "semantest-extension.sha256"
#: True in the service worker once "Allow User Scripts" is on.
USER_SCRIPTS_DEFINED_JS = "() => typeof chrome.userScripts !== 'undefined'"
#: Waits in the service worker until the API appears (the running worker sees the toggle flip
#: without a restart); resolves to whether it did within `ms`.
WAIT_USER_SCRIPTS_JS = """async ms => {
    const until = Date.now() + ms;
    while (typeof chrome.userScripts === 'undefined' && Date.now() < until)
        await new Promise(r => setTimeout(r, 50));
    return typeof chrome.userScripts !== 'undefined';
}"""


def launch_args(extension_dir: Path) -> list[str]:
    """Chromium flags of every managed browser, plus loading exactly our unpacked extension."""
    return [
        *CHROMIUM_ARGS,
        f"--disable-extensions-except={extension_dir}",
        f"--load-extension={extension_dir}",
    ]


def extension_digest(extension_dir: Path) -> str:
    """sha256 over the extension's files (names and bytes), to tell one build from another."""
    digest = hashlib.sha256()
    for path in sorted(p for p in extension_dir.rglob("*") if p.is_file()):
        digest.update(path.relative_to(extension_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def drop_stale_extension_code(
    profile_dir: Path, extension_dir: Path, digest: str | None = None
) -> bool:
    """Forget the profile's cached service-worker scripts when the extension changed.

    Chromium keeps an unpacked extension's service worker in `Default/Service Worker` and runs
    that copy on the next launch even when the files on disk are newer. The extension's stored
    settings and the "Allow User Scripts" toggle live elsewhere in the profile and survive.
    `digest` saves hashing again when the caller has it. Returns True when the cache was
    dropped (also on a profile without a stamp yet).
    """
    stamp = profile_dir / EXTENSION_STAMP
    current = digest or extension_digest(extension_dir)
    if stamp.exists() and stamp.read_text().strip() == current:
        return False
    shutil.rmtree(profile_dir / "Default" / "Service Worker", ignore_errors=True)
    profile_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(current + "\n")
    return True


def user_scripts_enabled_in_prefs(profile_dir: Path, extension_dir: Path) -> bool:
    """Whether the profile's stored preferences have "Allow User Scripts" on for the extension
    loaded from `extension_dir` (the id of an unpacked extension follows from its path)."""
    try:
        prefs = json.loads((profile_dir / "Default" / "Preferences").read_text())
    except (OSError, ValueError):
        return False
    settings = prefs.get("extensions", {}).get("settings", {})
    wanted = str(extension_dir)
    return any(
        isinstance(entry, dict)
        and entry.get("path") == wanted
        and entry.get("user_scripts_enabled") is True
        for entry in settings.values()
    )


async def service_worker(context: BrowserContext) -> Worker:
    """The extension's service worker (waits for it to start)."""
    for worker in context.service_workers:
        if worker.url.startswith("chrome-extension://"):
            return worker
    found: Worker = await context.wait_for_event(
        "serviceworker", predicate=lambda w: w.url.startswith("chrome-extension://")
    )
    return found


async def user_scripts_defined(worker: Worker) -> bool:
    """Whether `chrome.userScripts` exists in the service worker right now."""
    return bool(await worker.evaluate(USER_SCRIPTS_DEFINED_JS))


async def wait_user_scripts(worker: Worker, timeout_s: float = 5.0) -> bool:
    """Wait (in the worker) until `chrome.userScripts` appears; False after `timeout_s`."""
    return bool(await worker.evaluate(WAIT_USER_SCRIPTS_JS, int(timeout_s * 1000)))


async def allow_user_scripts(context: BrowserContext, extension_id: str) -> None:
    """Turn on the per-extension "Allow User Scripts" toggle (stored in the profile).

    Goes through `chrome://extensions`, which costs ~1.5 s and a WebUI renderer: templates do it
    once, so agents only need it as a fallback.
    """
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


async def enable_user_scripts(context: BrowserContext, worker: Worker) -> bool:
    """Make sure `chrome.userScripts` is defined; click the toggle only when it is not.

    Returns True when the toggle had to be clicked.
    """
    if await user_scripts_defined(worker):
        return False
    await allow_user_scripts(context, worker.url.split("/")[2])
    if not await wait_user_scripts(worker):
        raise RuntimeError("chrome.userScripts still undefined after turning on the toggle")
    return True
