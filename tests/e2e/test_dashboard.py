"""`/dashboard` in real Chromium against a real stack (controller, sandbox, one agent): sign in
with the admin key, submit a prompt from the page, watch the job appear, run and finish with
its thumbnail — whose bytes are the stored image's (sha256) — while the fleet, lanes and
providers show the agent's slot. The routes behind the page refuse anyone without `admin`.

`SEMANTEST_DASHBOARD_SCREENSHOT=1` also saves the page to docs/dashboard.png.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from semantest.config import find_chromium
from semantest.stack import Stack
from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import stack_settings, wait_final

pytestmark = pytest.mark.e2e

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DB = 55
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"


@pytest.fixture(scope="module")
def board_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose sandbox takes 4 s per image, so a job is seen running."""
    settings = stack_settings(
        redis_url, DB, tmp_path_factory.mktemp("dashboard"), sandbox_latency_ms=4000
    )
    import redis

    redis.Redis.from_url(settings.redis_url or "").flushdb()
    with Stack(settings, agents=1) as running:
        yield running


@pytest.fixture(scope="module")
def board_browser() -> Iterator[Browser]:
    chromium = find_chromium()
    assert chromium, "Chromium is not installed: run `make setup`"
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def board_page(board_browser: Browser) -> Iterator[Page]:
    context = board_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"the page threw: {errors}"


def sign_in(page: Page, url: str, key: str) -> None:
    page.goto(f"{url}/dashboard")
    page.locator("#key").fill(key)
    page.get_by_role("button", name="Open the dashboard").click()


def test_a_job_submitted_on_the_page_appears_runs_and_finishes_with_its_thumbnail(
    board_stack: Stack, board_page: Page
) -> None:
    page = board_page
    url = board_stack.url
    sign_in(page, url, ADMIN_KEY)
    page.locator("#main").wait_for(state="visible", timeout=10_000)
    assert page.evaluate("sessionStorage.getItem('semantest.adminKey')") == ADMIN_KEY
    # the fleet: the one agent and its idle slot; the providers and lanes
    page.locator('#fleet tr[data-agent="agent-1"]').wait_for(timeout=15_000)
    page.locator('#providers tr[data-provider="sandbox"] .badge.ok').wait_for(timeout=10_000)
    assert page.locator('#lanes tr[data-lane="sandbox.normal"] .depth').inner_text() == "0"
    page.locator("#live.live").wait_for(timeout=10_000)  # the WebSocket is up

    prompt = f"a dashboard lighthouse {time.time_ns()}"
    page.locator("#prompt").fill(prompt)
    page.get_by_role("button", name="Submit").click()
    job_id = page.locator("#submitted-id").inner_text(timeout=10_000)
    row = page.locator(f'#jobs tr[data-job-id="{job_id}"]')
    row.wait_for(timeout=5_000)
    # live: it is seen running (the sandbox takes 4 s) before it succeeds
    page.locator(f'#jobs tr[data-job-id="{job_id}"][data-status="running"]').wait_for(
        timeout=20_000
    )
    page.locator('#fleet [data-slot="agent-1/0"].busy').wait_for(timeout=10_000)
    done = page.locator(f'#jobs tr[data-job-id="{job_id}"][data-status="succeeded"]')
    done.wait_for(timeout=60_000)
    thumb = done.locator('img.thumb[data-loaded="true"]')
    thumb.wait_for(timeout=15_000)

    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    ) as api:
        record = wait_final(api, job_id)
    assert record["status"] == "succeeded" and record["prompt"] == prompt
    shown = thumb.evaluate(
        """async (img) => {
            const data = await (await fetch(img.src)).arrayBuffer();
            const digest = await crypto.subtle.digest("SHA-256", data);
            return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
        }"""
    )
    assert shown == record["images"][0]["sha256"]
    assert thumb.evaluate("img => img.naturalWidth") == record["images"][0]["width"]
    if os.environ.get("SEMANTEST_DASHBOARD_SCREENSHOT"):
        page.locator('#fleet [data-slot="agent-1/0"].idle').wait_for(timeout=10_000)
        page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_a_wrong_key_is_refused_on_the_page_and_the_reads_take_admin(
    board_stack: Stack, board_page: Page
) -> None:
    page = board_page
    url = board_stack.url
    sign_in(page, url, "sk_not_a_key_at_all_0000000000")
    error = page.locator("#login-error")
    error.wait_for(timeout=10_000)
    page.wait_for_function("document.querySelector('#login-error').textContent.length > 0")
    assert "key" in error.inner_text().lower()
    assert page.locator("#main").is_hidden()
    assert httpx.get(f"{url}/dashboard").status_code == 200  # the page itself holds no data
    for path in ("/dashboard/api/summary", "/dashboard/api/images/admin/" + "0" * 64 + ".png"):
        assert httpx.get(f"{url}{path}").status_code == 401
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    ) as api:
        made = api.post("/api/v1/admin/keys", json={"tenant": "viewer", "scopes": ["jobs:read"]})
        assert made.status_code == 201, made.text
        reader = made.json()["key"]
        refused = httpx.get(
            f"{url}/dashboard/api/summary", headers={"Authorization": f"Bearer {reader}"}
        )
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
        assert api.get("/dashboard/dashboard.js").status_code == 200
        assert api.get("/dashboard/secrets.txt").status_code == 404


def test_a_failed_job_shows_its_error_and_opens_its_evidence(
    board_stack: Stack, board_page: Page
) -> None:
    page = board_page
    url = board_stack.url
    faults = httpx.post(
        f"{board_stack.settings.sandbox_url}/_sandbox/faults", json={"kind": "refusal", "count": 1}
    )
    assert faults.status_code == 200, faults.text
    sign_in(page, url, ADMIN_KEY)
    page.locator("#live.live").wait_for(timeout=10_000)
    page.locator("#prompt").fill(f"a refused boat {time.time_ns()}")
    page.get_by_role("button", name="Submit").click()
    job_id = page.locator("#submitted-id").inner_text(timeout=10_000)
    failed = page.locator(f'#jobs tr[data-job-id="{job_id}"][data-status="failed"]')
    failed.wait_for(timeout=60_000)
    failed.get_by_text("CONTENT_REFUSED").wait_for(timeout=10_000)
    with page.context.expect_page() as opened:
        failed.get_by_role("button", name="screenshot").click()
    shot = opened.value
    shot.wait_for_load_state()
    assert shot.url.startswith("blob:")
    assert shot.evaluate("document.images.length && document.images[0].naturalWidth") > 0
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    ) as api:
        record = wait_final(api, job_id)
        served = api.get(f"/dashboard/api/evidence/{job_id}/1/screenshot.png")
        assert served.status_code == 200 and served.content.startswith(b"\x89PNG")
        assert api.get(record["artifacts"]["screenshot"]).content == served.content
        assert api.get(f"/dashboard/api/evidence/{job_id}/../../etc").status_code == 404
