"""Chrome agrees with `addons.match`: the match-pattern table, replayed in a real Chromium.

The extension does not match URLs itself: it hands each addon's patterns to
`chrome.userScripts.register` and Chrome injects. `resolve` (and the allowlist) match in
Python. This test checks the two agree on the rows of `tests/unit/test_match_patterns.py`
that a loopback page server can serve: every row is registered as its own user script (which
marks the page), every URL is loaded, and the scripts Chrome ran are compared with the table.

To serve the rows, `--host-resolver-rules` sends every host name to 127.0.0.1, and a row is
moved to plain http on the page server's port where that keeps its meaning: rows whose
pattern and URL name no port (a pattern without a port matches every port), with `https`
turned into `http` on both sides, or on the URL alone when the pattern's scheme is `*` (which
covers both). The table's expectation is checked to hold for the moved row first. Hosts on
Chrome's HSTS preload list (google.com, bbc.co.uk) are always fetched over https, so their
rows are left out.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError

from addons.match import MatchPattern, ParsedUrl
from semantest.stack import free_port
from semantest.testing.browser import allow_user_scripts, extension_worker, launch_extension_context
from tests.unit.test_match_patterns import CASES

pytestmark = pytest.mark.e2e


class Pages(BaseHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b"<!doctype html><title>match</title><p>match</p>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def servable(port: int) -> list[tuple[str, str, bool]]:
    """The table's rows moved onto http://<host>:<port> where that keeps their meaning."""
    rows = []
    for pattern, url, matched in CASES:
        if not url.startswith(("http://", "https://")):
            continue
        parsed, rule = ParsedUrl.of(url), MatchPattern.parse(pattern)
        if parsed is None or rule.port is not None or parsed.host.startswith("["):
            continue
        authority = url.split("://", 1)[1].split("/", 1)[0]
        if ":" in authority.rsplit("@", 1)[-1]:
            continue  # the URL names a port
        scheme, rest = url.split("://", 1)
        if scheme == "https":
            if pattern.startswith("https://"):
                pattern = "http://" + pattern[len("https://") :]
            elif not pattern.startswith(("*://", "<all_urls>")):
                continue
        host, _, path = rest.partition("/")
        moved = f"http://{host}:{port}/{path}"
        assert MatchPattern.parse(pattern).matches(moved) is matched, (pattern, url, moved)
        rows.append((pattern, moved, matched))
    return rows


@pytest.fixture(scope="module")
def page_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


def test_chrome_injects_exactly_where_the_table_says(
    browser_type: Any,
    extension_launch_args: dict[str, Any],
    extension_dir: Path,
    tmp_path: Path,
    page_port: int,
) -> None:
    rows = servable(page_port)
    options = dict(extension_launch_args)
    options["args"] = [*options.get("args", []), "--host-resolver-rules=MAP * 127.0.0.1"]
    context = launch_extension_context(
        browser_type, profile_dir=tmp_path / "profile", extension_dir=extension_dir, options=options
    )
    try:
        worker = extension_worker(context, None, 10)
        allow_user_scripts(context, worker)
        # The extension is never configured here, so it registers nothing of its own.
        refused = worker.evaluate(
            """async (rows) => {
                await chrome.userScripts.unregister();
                const refused = [];
                for (const [i, pattern] of rows.entries()) {
                    try {
                        await chrome.userScripts.register([{
                            id: `row${i}`, matches: [pattern], runAt: "document_start",
                            js: [{code: `document.documentElement.dataset.row${i} = "1";`}],
                        }]);
                    } catch (err) { refused.push([i, String(err.message || err)]); }
                }
                return refused;
            }""",
            [p for p, _, _ in rows],
        )
        assert refused == [], f"Chrome refused patterns the table accepts: {refused}"
        disagreements = []
        checked = 0
        for url in sorted({u for _, u, _ in rows}):
            page = context.new_page()
            try:
                page.goto(url, wait_until="load")
                ran = set(page.evaluate("() => Object.keys(document.documentElement.dataset)"))
            except PlaywrightError as exc:  # an HSTS-preloaded host (google.com, bbc.co.uk)
                assert "ERR_SSL" in str(exc), exc  # is always fetched over https: not servable
                continue
            finally:
                page.close()
            for i, (pattern, row_url, matched) in enumerate(rows):
                if row_url != url:
                    continue
                checked += 1
                if (f"row{i}" in ran) is not matched:
                    disagreements.append((pattern, url, matched))
        assert disagreements == [], (
            f"Chrome and addons.match disagree (pattern, url, table): {disagreements}"
        )
    finally:
        context.close()
