"""`agents.browser` in two steps: a browser with the extension and user scripts on needs no
controller and no bridge; `configure` then tells it where they are."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Error, async_playwright

from agents.browser import configure, launch_extension
from extension_bridge import EXTENSION_DIR
from semantest.config import find_chromium
from semantest.stack import free_port

pytestmark = pytest.mark.e2e


async def test_the_extension_runs_without_controller_or_bridge(tmp_path: Path) -> None:
    chromium = find_chromium()
    assert chromium, "Chromium is not installed: run `make setup`"
    async with async_playwright() as pw:
        browser = await launch_extension(
            pw, chromium=chromium, profile_dir=tmp_path / "profile", extension_dir=EXTENSION_DIR
        )
        try:
            assert browser.configured == {}
            assert browser.worker.url == (
                f"chrome-extension://{browser.extension_id}/service_worker.js"
            )
            status = await browser.worker.evaluate("() => self.semantest.status()")
            assert status["userScripts"] is True
            assert (status["config"], status["bridge"], status["addons"]) == (
                None,
                "unconfigured",
                [],
            )
            closed = f"http://127.0.0.1:{free_port()}"
            with pytest.raises(Error, match=f"cannot reach {closed}/api/v1/addons"):
                await configure(
                    browser, controller_url=closed, bridge_url="ws://127.0.0.1:9/bridge"
                )
        finally:
            await browser.context.close()
