"""End-to-end testing of the Semantest extension and of addons, as a pytest plugin.

`pip install semantest` registers the plugin (`semantest.testing.plugin`, entry point
`pytest11`); its fixtures are `extension_dir`, `extension_context`, `extension_id`,
`service_worker`, `addon_server`, `addon_page`, `bridge` and `extension_page`
(docs/testing-extensions.md). This package's own imports are light: Playwright loads only when
a fixture or helper needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from semantest.testing.servers import AddonJobError

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Worker

__all__ = ["AddonJobError", "restart_service_worker", "service_worker_of"]


def service_worker_of(context: BrowserContext, extension_id: str, timeout_s: float = 30) -> Worker:
    """The extension's live service worker, started again if Chromium stopped it."""
    from semantest.testing.browser import extension_worker

    return extension_worker(context, extension_id, timeout_s)


def restart_service_worker(
    context: BrowserContext, extension_id: str, timeout_s: float = 30
) -> Worker:
    """Stop the extension's service worker, as Chromium does to an idle one, and start it
    again: what it held in globals is gone; `chrome.storage` and registered scripts remain."""
    from semantest.testing.browser import extension_worker, stop_service_worker

    stop_service_worker(context, extension_id, timeout_s)
    return extension_worker(context, extension_id, timeout_s)
