"""The plugin's cheap parts: registered and light to import, its options, the launch options
it builds on pytest-playwright's, the match-pattern check behind its messages, and the
sandbox route its fixtures use to empty the fault queue."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from browser_profiles.extension import launch_args
from sandbox.app import create_app
from semantest.testing.browser import persistent_launch_options
from semantest.testing.servers import addon_covers

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.unit

EXTENSION = Path("/opt/ext")


def test_registered_under_pytest11_and_loaded_here(pytestconfig: pytest.Config) -> None:
    (entry,) = [
        e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "semantest"
    ]
    assert entry.value == "semantest.testing.plugin"
    assert pytestconfig.pluginmanager.get_plugin("semantest") is not None
    for option in ("--extension-dir", "--addons-dir", "--chromium", "--headed", "--output"):
        assert pytestconfig.getoption(option) in (None, False, "test-results"), option


def test_importing_the_plugin_loads_no_browser_and_no_server() -> None:
    heavy = ("playwright", "controller", "fastapi", "uvicorn", "redis", "extension_bridge")
    code = (
        "import json, sys, semantest.testing, semantest.testing.plugin\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(loaded) == []


def test_launch_options_keep_pytest_playwrights_and_add_the_extension() -> None:
    given = {"headless": False, "slow_mo": 100, "args": ["--lang=fr", "--no-sandbox"]}
    options = persistent_launch_options(
        given, chromium="/usr/bin/chromium", extension_dir=EXTENSION
    )
    assert options["headless"] is False and options["slow_mo"] == 100  # --headed, --slowmo
    assert options["executable_path"] == "/usr/bin/chromium"
    assert options["args"][0] == "--lang=fr"
    assert options["args"][1:] == launch_args(EXTENSION)  # no flag twice
    assert f"--load-extension={EXTENSION}" in options["args"]
    assert given == {"headless": False, "slow_mo": 100, "args": ["--lang=fr", "--no-sandbox"]}


def test_a_channel_wins_over_the_found_chromium_and_headless_is_the_default() -> None:
    options = persistent_launch_options(
        {"channel": "chrome"}, chromium="/usr/bin/chromium", extension_dir=EXTENSION
    )
    assert "executable_path" not in options and options["channel"] == "chrome"
    assert options["headless"] is True


@pytest.mark.parametrize(
    ("patterns", "url", "covered"),
    [
        (["http://127.0.0.1/*"], "http://127.0.0.1:8123/index.html", True),
        (["http://127.0.0.1/chat*"], "http://127.0.0.1:8123/chat?x=1", True),
        (["http://127.0.0.1/chat*"], "http://127.0.0.1:8123/other", False),
        (["https://*.example.com/*"], "https://shop.example.com/a", True),
        (["https://*.example.com/*"], "https://example.com/", True),
        (["https://*.example.com/*"], "https://example.org/", False),
        (["*://localhost:9000/*"], "http://localhost:9001/", False),
        (["<all_urls>"], "http://anything/", True),
    ],
)
def test_match_patterns_behind_the_not_ready_message(
    patterns: list[str], url: str, covered: bool
) -> None:
    assert addon_covers(patterns, url) is covered


def test_the_sandbox_fault_queue_can_be_emptied() -> None:
    with TestClient(create_app(latency_ms=0)) as sandbox:
        sandbox.post("/_sandbox/faults", json={"kind": "server", "count": 2})
        assert sandbox.get("/_sandbox/faults").json() == {"pending": ["server", "server"]}
        cleared = sandbox.delete("/_sandbox/faults")
        assert cleared.status_code == 200 and cleared.json() == {"pending": []}
        assert sandbox.get("/_sandbox/faults").json() == {"pending": []}


def test_without_pytest_playwright_browser_tests_are_refused_with_the_fix(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_page="def test_page(addon_page):\n    pass\n",
        test_plain="def test_plain(addon_server_redis_url):\n    pass\n",
    )
    refused = pytester.runpytest("-p", "no:playwright", "-p", "no:cacheprovider")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    (line,) = [x for x in refused.stderr.lines if "pytest-playwright" in x]
    assert "browser fixtures stand on pytest-playwright" in line
    assert "test_page.py::test_page needs them" in line
    assert line.endswith("pip install pytest-playwright")
    plain = pytester.runpytest("-p", "no:playwright", "--collect-only", "-q", "test_plain.py")
    assert plain.ret == pytest.ExitCode.OK
