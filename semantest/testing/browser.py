"""Chromium with an unpacked extension, through the sync Playwright API pytest-playwright uses.

The launch flags and the "Allow User Scripts" scripts are the ones agents use
(`browser_profiles.extension`); this module only drives them with the sync API.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from browser_profiles.extension import (
    USER_SCRIPTS_DEFINED_JS,
    WAIT_USER_SCRIPTS_JS,
    drop_stale_extension_code,
    launch_args,
)

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, BrowserType, ViewportSize, Worker

#: The viewport of every page the plugin opens (the agents' one).
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}


def persistent_launch_options(
    launch_options: dict[str, Any], *, chromium: str | None, extension_dir: Path
) -> dict[str, Any]:
    """pytest-playwright's launch options (`browser_type_launch_args`: --headed,
    --browser-channel, --slowmo) plus what an unpacked extension needs.

    `chromium` is used unless a channel was asked for; the extension flags come after any
    `args` already given.
    """
    options = dict(launch_options)
    options.setdefault("headless", True)
    if chromium and not options.get("channel"):
        options.setdefault("executable_path", chromium)
    needed = launch_args(extension_dir)
    options["args"] = [a for a in options.get("args", []) if a not in needed] + needed
    return options


def launch_extension_context(
    browser_type: BrowserType,
    *,
    profile_dir: Path,
    extension_dir: Path,
    options: dict[str, Any],
) -> BrowserContext:
    """A persistent context on `profile_dir` with the extension loaded (not yet checked)."""
    profile_dir.mkdir(parents=True, exist_ok=True)
    drop_stale_extension_code(profile_dir, extension_dir)
    context: BrowserContext = browser_type.launch_persistent_context(
        str(profile_dir), viewport=VIEWPORT, **options
    )
    return context


def extension_worker(context: BrowserContext, extension_id: str | None, timeout_s: float) -> Worker:
    """The service worker of `extension_id` (of the first extension when None), running.

    A stopped worker (stopped by a test, or idle) is started again through the DevTools
    protocol, the way Chromium starts one for an event. Playwright keeps the same `Worker` for
    it (DevTools stays attached), so this returns that object, its globals fresh.
    """
    prefix = f"chrome-extension://{extension_id}/" if extension_id else "chrome-extension://"
    if extension_id is not None:
        _set_running(context, prefix, True, timeout_s)
    for worker in context.service_workers:
        if worker.url.startswith(prefix):
            return worker
    found: Worker = context.wait_for_event(
        "serviceworker", predicate=lambda w: w.url.startswith(prefix), timeout=timeout_s * 1000
    )
    return found


def stop_service_worker(context: BrowserContext, extension_id: str, timeout_s: float) -> None:
    """Stop the extension's service worker, as Chromium does to an idle one."""
    _set_running(context, f"chrome-extension://{extension_id}/", False, timeout_s)


def _set_running(context: BrowserContext, scope: str, running: bool, timeout_s: float) -> None:
    """Start the service worker of `scope` and wait until it runs; or stop it and wait until
    it has stopped (it may start again at once: an addon page reconnecting wakes it)."""
    page = context.new_page()
    try:
        cdp = context.new_cdp_session(page)
        versions: dict[str, str] = {}
        seen: set[str] = set()  # every status reported since we asked

        def updated(event: dict[str, Any]) -> None:
            for version in event["versions"]:
                if version["scriptURL"].startswith(scope):
                    versions[version["versionId"]] = version["runningStatus"]
                    seen.add(version["runningStatus"])

        cdp.on("ServiceWorker.workerVersionUpdated", updated)
        cdp.send("ServiceWorker.enable")
        wanted = "running" if running else "stopped"
        deadline = time.monotonic() + timeout_s
        asked = False
        while not (
            versions and (wanted in versions.values() if running else asked and wanted in seen)
        ):
            if versions and not asked:
                seen.clear()
                if running and not ({"running", "starting"} & set(versions.values())):
                    cdp.send("ServiceWorker.startWorker", {"scopeURL": scope})
                elif not running:
                    cdp.send("ServiceWorker.stopAllWorkers")
                asked = True
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the service worker of {scope} is not {wanted} after {timeout_s:g} s "
                    f"(seen: {sorted(seen) or 'no service worker at all'})"
                )
            page.wait_for_timeout(25)
    finally:
        page.close()


def allow_user_scripts(context: BrowserContext, worker: Worker, timeout_s: float = 10.0) -> bool:
    """Turn "Allow User Scripts" on for the worker's extension unless it is on already.

    Clicks `#allow-user-scripts` on `chrome://extensions/?id=<id>`; the profile remembers it.
    Returns True when it had to click.
    """
    if worker.evaluate(USER_SCRIPTS_DEFINED_JS):
        return False
    extension_id = worker.url.split("/")[2]
    page = context.new_page()
    try:
        page.goto(f"chrome://extensions/?id={extension_id}")
        toggle = page.locator("#allow-user-scripts")
        toggle.wait_for(state="attached", timeout=timeout_s * 1000)
        if not toggle.evaluate("e => !!e.checked"):  # a cr-toggle: its state is a property
            toggle.click()
    finally:
        page.close()
    if not worker.evaluate(WAIT_USER_SCRIPTS_JS, int(timeout_s * 1000)):
        raise RuntimeError(
            f"chrome.userScripts is still undefined in extension {extension_id} after turning "
            "on Allow User Scripts: does its manifest ask for the userScripts permission, and "
            "is Chromium 138 or newer?"
        )
    return True
