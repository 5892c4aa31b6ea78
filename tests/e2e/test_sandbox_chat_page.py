"""The sandbox chat page in real Chromium, driven through its own controls as a person would:
replies follow the conversation, "New chat" starts another one, the image toggle decides
whether a reply carries an image. Runs on pytest-playwright's `page`."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

pytestmark = pytest.mark.e2e


@pytest.fixture
def page(page: Page, sandbox_url: str) -> Page:
    """pytest-playwright's page (the system Chromium, see conftest), on the sandbox chat."""
    page.goto(f"{sandbox_url}/chat")
    return page


def send(page: Page, message: str) -> str:
    """Type and send `message`; the text of the assistant's finished reply."""
    before = page.locator('#thread .turn[data-role="assistant"]').count()
    page.locator("#composer").fill(message)
    page.locator("#send").click()
    reply = page.locator('#thread .turn[data-role="assistant"]').nth(before)
    reply.and_(page.locator('[data-state="done"]')).wait_for(timeout=10_000)
    return reply.locator(".text").inner_text()


def test_replies_follow_the_conversation_until_new_chat(page: Page) -> None:
    assert send(page, "first") == "reply #1 to: first. Here is an image of first."
    assert send(page, "second").startswith("reply #2 to: second (after #1: first).")
    assert page.locator("img.generated").count() == 2

    page.locator("#new-chat").click()
    assert page.locator("#thread .turn").count() == 0
    assert send(page, "again") == "reply #1 to: again. Here is an image of again."


def test_the_image_toggle_decides_whether_a_reply_has_an_image(page: Page) -> None:
    toggle = page.locator("#image-toggle")
    assert toggle.get_attribute("aria-pressed") == "true"
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "false"
    assert send(page, "just words") == "reply #1 to: just words."
    assert page.locator("img.generated").count() == 0
    toggle.click()
    assert send(page, "a picture").endswith("Here is an image of a picture.")
    assert page.locator("img.generated").count() == 1
