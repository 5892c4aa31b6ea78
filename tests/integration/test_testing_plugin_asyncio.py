"""The plugin lets pytest-playwright's sync fixtures and pytest-asyncio tests share a session:
sync Playwright marks asyncio's loop as running for as long as it lives, so the plugin runs
the tests that use it after the others. Without that, the asyncio test below fails with
"Cannot run the event loop while another loop is running"."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

MIXED = """
import asyncio

import pytest

ORDER = []


def test_sync_playwright_first(playwright):
    ORDER.append("sync")
    assert playwright.chromium.name == "chromium"


@pytest.mark.asyncio
async def test_asyncio_after_it():
    ORDER.append("async")
    await asyncio.sleep(0.01)


def test_order():
    assert ORDER == ["async"]
"""


def test_asyncio_tests_run_before_the_sync_playwright_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mixed=MIXED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", timeout=120)
    result.assert_outcomes(passed=3)
    result.stdout.re_match_lines(
        [
            r".*test_asyncio_after_it PASSED.*",
            r".*test_order PASSED.*",
            r".*test_sync_playwright_first PASSED.*",
        ]
    )
