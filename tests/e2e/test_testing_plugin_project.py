"""The plugin as a third party gets it: a small project of its own (an addon folder, a static
page served by its own server, a test file importing nothing of ours) run by pytest in a
subprocess, as after `pip install semantest`. Its tests pass; a broken addon fails them with a
readable message and leaves each page's screenshot, DOM and console log in test-results/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.e2e

GREETER_MANIFEST = {
    "id": "greeter",
    "name": "Greeter",
    "version": "1.0.0",
    "matches": ["http://127.0.0.1/*"],
    "js": ["greeter.js"],
}

GREETER_JS = """
document.querySelector("h1").textContent = "Hello from greeter";
SemantestAddon.define({
  id: "greeter",
  version: "1.0.0",
  detectState: () => "ready",
  async submit(prompt) {
    document.querySelector("#out").textContent = prompt.toUpperCase();
  },
  async collect() {
    return { images: [], reply: document.querySelector("#out").textContent };
  },
});
"""

BROKEN_JS = """
throw new Error("greeter is broken: it lost its heading");
"""

INDEX_HTML = """<!doctype html>
<html><head><title>Shop</title></head>
<body><h1>Welcome</h1><p id="out"></p></body></html>
"""

CONFTEST = '''
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def site_url():
    """A local replica of the site the addon runs on."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(HERE / "site"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def addons_dir(pytestconfig):
    """Overrides the plugin's: our own addons unless --addons-dir says otherwise."""
    given = pytestconfig.getoption("--addons-dir")
    return Path(given).resolve() if given else HERE / "my_addons"
'''

TESTS = """
from playwright.sync_api import expect


def test_the_greeter_changes_the_heading(addon_page, site_url):
    page = addon_page(f"{site_url}/index.html", addons=["greeter"], timeout=5)
    expect(page.locator("h1")).to_have_text("Hello from greeter")


def test_the_greeter_answers_a_job(addon_page, bridge, site_url):
    page = addon_page(f"{site_url}/index.html", addons=["greeter"], timeout=5)
    result = bridge.run(page, "shout this")
    assert result.reply == "SHOUT THIS"
    expect(page.locator("#out")).to_have_text("SHOUT THIS")


def test_the_extension_is_loaded(service_worker, extension_id):
    assert service_worker.url.startswith(f"chrome-extension://{extension_id}/")
"""


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    manifest = json.dumps(GREETER_MANIFEST)
    write(
        pytester.path,
        {
            "conftest.py": CONFTEST,
            "test_greeter.py": TESTS,
            "site/index.html": INDEX_HTML,
            "my_addons/greeter/addon.json": manifest,
            "my_addons/greeter/greeter.js": GREETER_JS,
            "broken_addons/greeter/addon.json": manifest,
            "broken_addons/greeter/greeter.js": BROKEN_JS,
        },
    )
    return pytester.path


def test_an_outside_project_tests_its_addon(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=3)
    assert not (project / "test-results").exists()  # nothing kept for passing tests


def test_a_broken_addon_fails_readably_and_leaves_artifacts(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--addons-dir", "broken_addons", timeout=180
    )
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    readable = (
        r"AssertionError: addon 'greeter' did not report ready in "
        r"http://127\.0\.0\.1:\d+/index\.html within 5 s\.\n"
        r"E +The extension registered \['greeter'\] \(user scripts on\)\.\n"
        r"E +The page's console errors:\n"
        r"E +\[pageerror\] Error: greeter is broken: it lost its heading"
    )
    assert len(re.findall(readable, out)) == 2, out
    folders = sorted(p.name for p in (project / "test-results").iterdir())
    assert folders == [
        "test-greeter-py-test-the-greeter-answers-a-job-chromium",
        "test-greeter-py-test-the-greeter-changes-the-heading-chromium",
    ]
    for folder in folders:
        kept = project / "test-results" / folder
        assert (kept / "test-failed-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        dom = (kept / "page-1.html").read_text()
        assert "<h1>Welcome</h1>" in dom  # the addon never changed it
        console = (kept / "console-1.log").read_text()
        assert re.search(r"greeter is broken: it lost its heading", console), console
