"""Addon delivery to a running browser: publish, promote, roll back, tampered bytes, a stopped
service worker, and a browser restarted while the controller is unreachable.

Real parts: a controller on Redis database 61, Chromium with the real extension (its own
profile), a page server for the probe addon's pages, and a bridge endpoint that only records
what the extension says. The extension reaches the controller through a small proxy that can
alter bundle bytes on the way (a tampering CDN) or stop answering (the controller down).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.sync.server import ServerConnection, serve

from semantest.config import Settings
from semantest.stack import free_port
from semantest.testing.browser import (
    allow_user_scripts,
    extension_worker,
    launch_extension_context,
    stop_service_worker,
)
from tests.conftest import ADMIN_KEY, serve_controller

pytestmark = pytest.mark.e2e

DB = 61
POLL_S = 1
PROBE = "probe"


class Proxy:
    """Forwards to the controller; `tamper` alters bundle bytes, `stop()` stops answering."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.tamper = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("content-type", "if-none-match", "accept")
                }
                reply = httpx.request(
                    self.command, outer.upstream + self.path, content=body, headers=headers
                )
                content = reply.content
                if outer.tamper and "/bundles/" in self.path and reply.status_code == 200:
                    content = content.replace(b"dataset.probe", b"dataset.evil")
                self.send_response(reply.status_code)
                for name in ("content-type", "etag", "cache-control"):
                    if name in reply.headers:
                        self.send_header(name, reply.headers[name])
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError):  # the page or worker went away
                    self.wfile.write(content)

            do_GET = do_POST = do_PUT = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Pages(BaseHTTPRequestHandler):
    """Any path: a small HTML page (the probe addon marks it)."""

    def log_message(self, *_: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b"<!doctype html><title>probe</title><p>probe page</p>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def controller(api_settings: Settings, redis_url: str) -> Iterator[str]:
    url = f"{redis_url.rsplit('/', 1)[0]}/{DB}"
    redis.Redis.from_url(url).flushdb()
    with serve_controller(
        api_settings.model_copy(update={"redis_url": url, "port": free_port()})
    ) as base:
        yield base


@pytest.fixture(scope="module")
def api(controller: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=controller, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    ) as c:
        yield c


@pytest.fixture(scope="module")
def proxy(controller: str) -> Iterator[Proxy]:
    found = Proxy(controller)
    yield found
    found.stop()


@pytest.fixture(scope="module")
def pages() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/probe/page"
    server.shutdown()


@pytest.fixture(scope="module")
def hellos() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A bridge endpoint that records every `hello` and `addon.ready`."""
    seen: list[dict[str, Any]] = []

    def handler(socket: ServerConnection) -> None:
        for raw in socket:
            message = json.loads(raw)
            if message.get("type") in ("hello", "addon.ready"):
                seen.append(message)

    server = serve(handler, "127.0.0.1", free_port())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/bridge", seen
    server.shutdown()


def publish(api: httpx.Client, version: str, channel: str = "stable") -> None:
    body = {
        "manifest": {
            "id": PROBE,
            "name": "Probe",
            "version": version,
            "matches": ["http://127.0.0.1/probe/*"],
            "channel": channel,
            "js": ["driver.js"],
        },
        "files": {"driver.js": f"document.documentElement.dataset.probe = {version!r};\n"},
    }
    reply = api.put(f"/api/v1/addons/{PROBE}/versions/{version}", json=body)
    assert reply.status_code == 201, reply.text


def injected(context: Any, url: str) -> str | None:
    """The probe version a freshly loaded page got (None: no probe ran)."""
    page = context.new_page()
    try:
        page.goto(url)
        try:
            page.wait_for_function("() => document.documentElement.dataset.probe", timeout=1500)
        except Exception:
            return None
        value = page.evaluate("() => document.documentElement.dataset.probe")
        return str(value) if value else None
    finally:
        page.close()


def until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until `check()` held; fails after `timeout_s`."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout_s, f"{what} within {timeout_s} s"
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def browser(
    browser_type: Any,
    extension_launch_args: dict[str, Any],
    extension_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    proxy: Proxy,
    hellos: tuple[str, list[dict[str, Any]]],
    api: httpx.Client,
) -> Iterator[dict[str, Any]]:
    profile = tmp_path_factory.mktemp("delivery-profile")
    publish(api, "1.0.0")
    context = launch_extension_context(
        browser_type,
        profile_dir=profile,
        extension_dir=extension_dir,
        options=extension_launch_args,
    )
    worker = extension_worker(context, None, 10)
    allow_user_scripts(context, worker)
    config = {"controllerUrl": proxy.url, "bridgeUrl": hellos[0], "refreshSeconds": POLL_S}
    worker.evaluate("cfg => self.semantest.configure(cfg)", config)
    box = {"context": context, "worker": worker, "id": worker.url.split("/")[2], "profile": profile}
    yield box
    box["context"].close()


def status(box: dict[str, Any]) -> dict[str, Any]:
    box["worker"] = extension_worker(box["context"], box["id"], 10)
    result: dict[str, Any] = box["worker"].evaluate("() => self.semantest.status()")
    return result


def test_publish_reaches_a_running_browser_within_one_poll(
    browser: dict[str, Any], api: httpx.Client, pages: str
) -> None:
    context = browser["context"]
    assert injected(context, pages) == "1.0.0"
    publish(api, "1.1.0")
    took = until(lambda: injected(context, pages) == "1.1.0", POLL_S + 4, "1.1.0 injected")
    print(f"publish → injected in a new page: {took:.2f} s (poll interval {POLL_S} s)")
    assert took <= POLL_S + 2.5  # one poll, plus loading the page that shows it
    installs = api.get("/api/v1/installs").json()["installs"]
    mine = next(i for i in installs if any(a["id"] == PROBE for a in i["addons"]))
    until(
        lambda: (
            {
                a["id"]: a["version"]
                for a in next(
                    i
                    for i in api.get("/api/v1/installs").json()["installs"]
                    if i["installId"] == mine["installId"]
                )["addons"]
            }.get(PROBE)
            == "1.1.0"
        ),
        POLL_S + 3,
        "the heartbeat reports 1.1.0",
    )
    assert mine["extensionVersion"] == "0.2.0"


def test_promote_then_rollback_ends_on_the_old_version(
    browser: dict[str, Any], api: httpx.Client, pages: str
) -> None:
    context = browser["context"]
    publish(api, "2.0.0", channel="beta")
    assert (
        api.post(
            f"/api/v1/addons/{PROBE}/promote", json={"version": "2.0.0", "channel": "stable"}
        ).status_code
        == 200
    )
    until(lambda: injected(context, pages) == "2.0.0", POLL_S + 4, "2.0.0 injected after promote")
    assert (
        api.post(f"/api/v1/addons/{PROBE}/rollback", json={"channel": "stable"}).json()["channels"][
            "stable"
        ]
        == "1.1.0"
    )
    until(lambda: injected(context, pages) == "1.1.0", POLL_S + 4, "1.1.0 injected after rollback")


def test_tampered_bundle_is_refused_and_the_last_good_stays(
    browser: dict[str, Any], api: httpx.Client, pages: str, proxy: Proxy
) -> None:
    context = browser["context"]
    proxy.tamper = True
    try:
        publish(api, "1.2.0")
        until(
            lambda: any(
                r["id"] == PROBE and r["version"] == "1.2.0" for r in status(browser)["refused"]
            ),
            POLL_S + 4,
            "the tampered 1.2.0 refused",
        )
        refusal = next(r for r in status(browser)["refused"] if r["version"] == "1.2.0")
        assert "integrity mismatch" in refusal["reason"]
        assert injected(context, pages) == "1.1.0"  # the last good version still runs
        until(
            lambda: any(
                r["version"] == "1.2.0"
                for i in api.get("/api/v1/installs").json()["installs"]
                for r in i["refused"]
            ),
            POLL_S + 3,
            "the refusal reported to /installs",
        )
    finally:
        proxy.tamper = False
    until(lambda: injected(context, pages) == "1.2.0", POLL_S + 4, "1.2.0 once the bytes are right")


def test_a_stopped_service_worker_brings_scripts_and_bridge_back(
    browser: dict[str, Any], pages: str, hellos: tuple[str, list[dict[str, Any]]]
) -> None:
    before = len(hellos[1])
    stop_service_worker(browser["context"], browser["id"], 10)
    assert injected(browser["context"], pages) == "1.2.0"  # registered scripts outlive the worker
    until(  # status() starts it again, as an event would; its start-up sync fills the list
        lambda: {a["id"]: a["version"] for a in status(browser)["addons"]}.get(PROBE) == "1.2.0",
        10,
        "the restarted worker lists 1.2.0",
    )
    until(lambda: any(m["type"] == "hello" for m in hellos[1][before:]), 10, "a new bridge hello")
    hello = [m for m in hellos[1] if m["type"] == "hello"][-1]
    assert any(a["id"] == PROBE for a in hello["addons"])


def test_a_detect_state_that_throws_is_reported_as_an_error(
    browser: dict[str, Any], api: httpx.Client, pages: str, hellos: tuple[str, list[dict[str, Any]]]
) -> None:
    driver = """SemantestAddon.define({
  id: "thrower", version: "1.0.0",
  detectState() { throw new Error("no composer on this page"); },
  async submit() {}, async collect() { return []; },
});
"""
    body = {
        "manifest": {
            "id": "thrower",
            "name": "Thrower",
            "version": "1.0.0",
            "matches": ["http://127.0.0.1/thrower/*"],
            "js": ["driver.js"],
        },
        "files": {"driver.js": driver},
    }
    assert api.put("/api/v1/addons/thrower/versions/1.0.0", json=body).status_code == 201
    url = pages.replace("/probe/", "/thrower/")

    def ready() -> list[dict[str, Any]]:
        return [m for m in hellos[1] if m["type"] == "addon.ready" and m["addonId"] == "thrower"]

    def loaded_and_reported() -> bool:
        page = browser["context"].new_page()
        try:
            page.goto(url)
            page.wait_for_timeout(300)
        finally:
            page.close()
        return bool(ready())

    until(loaded_and_reported, POLL_S + 8, "the thrower addon's addon.ready")
    assert {m["state"] for m in ready()} == {"error"}


def test_cached_addons_inject_after_a_browser_restart_with_the_controller_down(
    browser: dict[str, Any],
    proxy: Proxy,
    pages: str,
    browser_type: Any,
    extension_launch_args: dict[str, Any],
    extension_dir: Path,
) -> None:
    browser["context"].close()
    proxy.stop()  # from now on the extension's controller refuses connections
    context = launch_extension_context(
        browser_type,
        profile_dir=browser["profile"],
        extension_dir=extension_dir,
        options=extension_launch_args,
    )
    browser["context"] = context
    until(
        lambda: injected(context, pages) == "1.2.0",
        10,
        "the cached 1.2.0 registered again at start",
    )
    sync = status(browser)["sync"]
    assert sync["ok"] is False and sync["offline"] is True and "cannot reach" in sync["error"]
