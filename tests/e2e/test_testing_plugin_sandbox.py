"""Our own addon and extension through the `semantest.testing` plugin's fixtures: the sandbox
addon injected into the sandbox chat page, jobs sent over the plugin's bridge as an agent sends
them, the image bytes compared by sha256, faults from the sandbox, a service-worker restart."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Worker

from extension_bridge import EXTENSION_DIR
from sandbox.render import render_png
from semantest.testing import AddonJobError, restart_service_worker
from semantest.testing.servers import AddonServer, Bridge
from tests.e2e.conftest import Faults

pytestmark = pytest.mark.e2e


def test_the_extension_is_ours_with_user_scripts_on(
    extension_dir: Path, extension_id: str, service_worker: Worker
) -> None:
    assert extension_dir == EXTENSION_DIR
    assert service_worker.url == f"chrome-extension://{extension_id}/service_worker.js"
    assert service_worker.evaluate("() => typeof chrome.userScripts?.register") == "function"


def test_addon_server_serves_our_addons(addon_server: AddonServer) -> None:
    assert "sandbox" in addon_server.addons
    assert addon_server.redis_url.endswith("/57")


def test_a_job_in_the_sandbox_page_gives_the_rendered_png(
    addon_page: Any, bridge: Bridge, sandbox_url: str
) -> None:
    page: Page = addon_page(f"{sandbox_url}/chat", addons=["sandbox"])
    prompt = f"a kite over dunes {uuid.uuid4().hex[:6]}"
    steps: list[dict[str, Any]] = []
    result = bridge.run(page, prompt, on_progress=steps.append)
    (image,) = result.images
    served = page.request.get(image.url)
    assert served.ok
    expected = hashlib.sha256(render_png(prompt)).hexdigest()
    assert hashlib.sha256(served.body()).hexdigest() == expected
    assert steps and steps[0]["stage"] == "typing"
    assert [s["progress"] for s in steps] == sorted(s["progress"] for s in steps)


def test_a_provider_refusal_comes_back_as_the_addon_error(
    addon_page: Any, bridge: Bridge, sandbox_url: str, sandbox_faults: Faults
) -> None:
    page: Page = addon_page(f"{sandbox_url}/chat", addons=["sandbox"])
    sandbox_faults.inject("refusal")
    with pytest.raises(AddonJobError) as refused:
        bridge.run(page, "refuse this")
    assert refused.value.code == "CONTENT_REFUSED" and not refused.value.retryable
    assert "content policy" in refused.value.message
    assert sandbox_faults.pending() == []


def test_an_unknown_addon_is_named(addon_page: Any, sandbox_url: str) -> None:
    with pytest.raises(LookupError, match=r"no addon 'nope' in .*\(it has: .*sandbox"):
        addon_page(f"{sandbox_url}/chat", addons=["nope"])


def test_after_a_service_worker_restart_the_addon_still_takes_jobs(
    extension_context: BrowserContext,
    extension_id: str,
    service_worker: Worker,
    addon_page: Any,
    bridge: Bridge,
    sandbox_url: str,
) -> None:
    page: Page = addon_page(f"{sandbox_url}/chat", addons=["sandbox"])
    service_worker.evaluate("() => { self.__marked = true; }")
    restarted = restart_service_worker(extension_context, extension_id)
    assert restarted.evaluate("() => self.__marked === undefined")  # a new run, globals gone
    assert restarted.evaluate("() => typeof self.semantest.configure") == "function"
    prompt = f"after restart {uuid.uuid4().hex[:6]}"
    (image,) = bridge.run(page, prompt).images
    assert (
        hashlib.sha256(page.request.get(image.url).body()).digest()
        == hashlib.sha256(render_png(prompt)).digest()
    )


def test_a_stopped_service_worker_is_started_for_the_next_test(
    extension_context: BrowserContext, extension_id: str
) -> None:
    from semantest.testing.browser import stop_service_worker

    stop_service_worker(extension_context, extension_id, 10)


def test_the_service_worker_fixture_gives_the_live_worker(service_worker: Worker) -> None:
    # the previous test left it stopped: this one still gets a worker that answers
    assert service_worker.evaluate("() => typeof self.semantest.status") == "function"


def test_a_fault_left_unconsumed(sandbox_url: str) -> None:
    httpx.post(f"{sandbox_url}/_sandbox/faults", json={"kind": "server", "count": 3})
    assert Faults(sandbox_url).pending() == ["server"] * 3


def test_does_not_reach_the_next_test(sandbox_url: str) -> None:
    assert Faults(sandbox_url).pending() == []
