"""`/docs` in real Chromium with no network beyond loopback: it renders, "Authorize" takes a key
and "Try it out" on a job route gets the controller's real 202; ReDoc renders too; `GET /`
leads to the docs. Every request to a non-loopback host is aborted and recorded, so a page that
still needed a CDN would be blank here (and the list of blocked requests would say why).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from controller.docs import HOME
from semantest.config import find_chromium
from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.e2e

#: How tests/e2e launch Debian's Chromium, without the network chatter of a desktop browser.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture(scope="module")
def docs_browser() -> Iterator[Browser]:
    chromium = find_chromium()
    assert chromium, "Chromium is not installed: run `make setup`"
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def offline_page(docs_browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A page whose every non-loopback request is aborted; the list collects their URLs."""
    blocked: list[str] = []
    context = docs_browser.new_context()

    def only_loopback(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            blocked.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    page = context.new_page()
    yield page, blocked
    context.close()


def test_docs_render_offline_authorize_and_try_a_job_route(
    offline_page: tuple[Page, list[str]], controller_url: str
) -> None:
    page, blocked = offline_page
    page.goto(f"{controller_url}/docs")
    authorize = page.locator("button.authorize").first
    authorize.wait_for(timeout=15_000)
    assert "Authorize" in authorize.inner_text()

    authorize.click()
    dialog = page.locator(".dialog-ux .modal-ux")
    bearer = dialog.locator(".auth-container", has_text="bearerAuth")
    bearer.locator("input").fill(ADMIN_KEY)
    bearer.locator("button.authorize").click()
    dialog.locator("button.btn-done").first.click()

    operation = page.locator("#operations-images-generate_api_v1_images_generate_post")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    body = {"prompt": "tried out in the docs", "provider": "sandbox"}
    operation.locator("textarea.body-param__text").fill(json.dumps(body))
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=15_000)
    assert status.inner_text().strip() == "202"
    answer = json.loads(
        operation.locator(".live-responses-table tbody .microlight").first.inner_text()
    )
    job = httpx.get(
        f"{controller_url}/api/v1/images/status/{answer['jobId']}",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert job.json()["prompt"] == body["prompt"]
    assert blocked == [], f"the docs page reached beyond loopback: {blocked}"


def test_redoc_renders_offline(offline_page: tuple[Page, list[str]], controller_url: str) -> None:
    page, blocked = offline_page
    page.goto(f"{controller_url}/redoc")
    page.get_by_text("/api/v1/images/generate").first.wait_for(timeout=20_000)
    assert blocked == [], f"ReDoc reached beyond loopback: {blocked}"


def test_the_root_leads_to_the_dashboard_and_the_docs_are_offline(controller_url: str) -> None:
    reply = httpx.get(f"{controller_url}/", follow_redirects=True)
    assert reply.history[0].status_code == 307
    assert reply.history[0].headers["location"] == HOME == "/dashboard"
    assert reply.status_code == 200 and "Semantest dashboard" in reply.text
    page = httpx.get(f"{controller_url}/docs").text
    assert "cdn." not in page and "https://" not in page.split("<body>")[0]


def test_every_error_answer_is_documented_as_the_envelope(controller_url: str) -> None:
    document = httpx.get(f"{controller_url}/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["apiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    codes = document["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if int(status) < 400 or (path == "/api/v1/health" and status == "503"):
                    continue
                media = answer["content"]["application/json"]
                where = f"{method.upper()} {path} {status}"
                assert media["schema"]["$ref"].endswith("/ErrorEnvelope"), where
                examples = [media["example"]] if "example" in media else []
                examples += [e["value"] for e in media.get("examples", {}).values()]
                assert examples and all(e["error"]["code"] in codes for e in examples), where
