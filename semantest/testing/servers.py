"""The servers behind the plugin's fixtures: a Redis, a controller serving an addons folder,
and the bridge an agent hosts, each usable from sync test code.

The controller and the bridge run on their own threads with their own event loops, so they
neither need nor disturb the sync Playwright API of the test.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import uvicorn

    from extension_bridge.protocol import AddonReady, JobResult
    from extension_bridge.server import BridgeServer

T = TypeVar("T")


class AddonJobError(AssertionError):
    """The addon answered `job.error`, or no answer came in time."""

    def __init__(self, code: str, message: str, retryable: bool) -> None:
        super().__init__(f"{code}: {message}{' (retryable)' if retryable else ''}")
        self.code = code
        self.message = message
        self.retryable = retryable


@contextmanager
def redis_server(workdir: Path, timeout_s: float = 10.0) -> Iterator[str]:
    """A private `redis-server` on a free loopback port, without persistence; its URL."""
    import redis

    from semantest.stack import free_port, redis_server_argv

    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError(
            "redis-server is not installed (addon_server needs a Redis): install it "
            "(Debian: apt-get install redis-server) or override the addon_server_redis_url "
            "fixture with the URL of one you have"
        )
    port = free_port()
    proc = subprocess.Popen(
        redis_server_argv(server, port, workdir, persist=False), stdout=subprocess.DEVNULL
    )
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@dataclass
class AddonServer:
    """A controller serving the addons of `addons_dir` at `url` (`GET /api/v1/addons`)."""

    url: str
    addons_dir: Path
    redis_url: str
    #: Each addon's id and its match patterns, as served.
    addons: dict[str, list[str]]


@contextmanager
def serve_addons(addons_dir: Path, redis_url: str, data_dir: Path) -> Iterator[AddonServer]:
    """Run a controller for `addons_dir` on a free port in a thread, until the block ends.

    The folder is loaded first, so a bad manifest fails here naming its file and field.
    """
    import httpx
    import uvicorn

    from addons.registry import Registry
    from controller.app import create_app
    from semantest.config import Settings
    from semantest.errors import SemantestError
    from semantest.stack import free_port

    try:
        Registry.load(addons_dir)
    except SemantestError as exc:
        found = "; ".join(f"{d['field']}: {d['reason']}" for d in exc.details or [])
        raise RuntimeError(f"{exc}{f' ({found})' if found else ''}") from None
    settings = Settings(
        redis_url=redis_url,
        port=free_port(),
        data_dir=data_dir,
        chromium=None,
        rate_limits=False,
        addons_public=True,
    )
    app = create_app(settings, addons_dir=addons_dir)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")
    )
    with _running(server):
        index = httpx.get(f"{settings.controller_url}/api/v1/addons", timeout=10)
        index.raise_for_status()
        yield AddonServer(
            url=settings.controller_url,
            addons_dir=addons_dir,
            redis_url=redis_url,
            addons={a["id"]: list(a.get("matches", [])) for a in index.json()["addons"]},
        )


@contextmanager
def _running(server: uvicorn.Server, timeout_s: float = 20.0) -> Iterator[None]:
    thread = threading.Thread(target=server.run, name="semantest-addon-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(
                f"the addon server did not start on port {server.config.port}; its log is above"
            )
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


class Bridge:
    """The bridge an agent hosts, on its own thread: the extension connects to `url`;
    `run(page, prompt)` sends a job to the addon in that page and returns its result."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="semantest-bridge", daemon=True
        )
        self._thread.start()
        self.server: BridgeServer = self._call(self._start(), timeout_s)
        #: Every `addon.ready` seen, oldest first (the server keeps only the latest per tab).
        self.ready: list[AddonReady] = []

    async def _start(self) -> BridgeServer:
        from extension_bridge.server import BridgeServer

        bridge = self

        class RecordingServer(BridgeServer):
            async def _notify(self) -> None:
                seen = bridge.ready
                bridge.ready = seen + [r for r in self.state.tabs.values() if r not in seen]
                await super()._notify()

        server = RecordingServer()
        await server.start()
        return server

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    @property
    def url(self) -> str:
        """The WebSocket URL the extension connects to (carries the bridge's token)."""
        return self.server.url

    def wait_ready(self, predicate: Callable[[AddonReady], bool], timeout_s: float) -> AddonReady:
        """The first `addon.ready` matching `predicate`; TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = next((r for r in self.ready if predicate(r)), None)
            if found is None:
                found = next((r for r in self.server.state.tabs.values() if predicate(r)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.02)

    def tab_of(self, url: str, timeout_s: float = 0.0) -> AddonReady | None:
        """The `addon.ready` of the tab showing `url` (matched on its #fragment) on the live
        connection, waiting up to `timeout_s` for it (after a service-worker restart the
        addon reconnects and says ready again)."""
        fragment = url.partition("#")[2]
        deadline = time.monotonic() + timeout_s
        while True:
            tabs = list(self.server.state.tabs.values())
            found = next(
                (r for r in reversed(tabs) if fragment and r.url.endswith("#" + fragment)), None
            )
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)

    def run(
        self,
        page: Any,
        prompt: str,
        *,
        options: dict[str, Any] | None = None,
        timeout: float = 30.0,
        generate_image: bool = True,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> JobResult:
        """Send `prompt` to the addon in `page` (opened by `addon_page`) and wait for its result.

        Raises `AddonJobError` (an AssertionError) carrying the addon's code when it answers
        `job.error`, or `PROVIDER_TIMEOUT` when nothing comes back within `timeout` seconds.
        """
        import secrets

        from extension_bridge.protocol import JobProgress, JobRun
        from semantest.errors import JobFailure

        ready = self.tab_of(page.url, min(timeout, 10.0))
        if ready is None:
            raise AddonJobError(
                "ADDON_NOT_READY",
                f"no addon reported ready in the tab showing {page.url}: open it with addon_page",
                False,
            )
        run = JobRun(
            tab_id=ready.tab_id,
            job_id=f"test-{secrets.token_hex(6)}",
            prompt=prompt,
            options=options or {},
            timeout_ms=max(1, int(timeout * 1000)),
            generate_image=generate_image,
        )

        async def progress(message: JobProgress) -> None:
            if on_progress is not None:
                on_progress(message.model_dump(mode="json", by_alias=True))

        try:
            return self._call(self.server.run_job(run, progress, timeout), timeout + 5)
        except JobFailure as exc:
            raise AddonJobError(exc.job_code, str(exc), exc.retryable) from None

    def close(self) -> None:
        """Stop the server and its thread."""
        try:
            self._call(self.server.close(), 10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


def addon_covers(patterns: list[str], url: str) -> bool:
    """Whether a Chrome match pattern in `patterns` covers `url` (ports ignored, as Chrome
    does for patterns without one)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    for pattern in patterns:
        if pattern == "<all_urls>":
            return True
        found = re.match(r"^(\*|[a-z]+)://([^/]*)(/.*)$", pattern)
        if found is None:
            continue
        scheme, host, path = found.groups()
        host, _, port = host.partition(":")
        if scheme != "*" and scheme != parts.scheme:
            continue
        if scheme == "*" and parts.scheme not in ("http", "https"):
            continue
        if port and port != "*" and str(parts.port) != port:
            continue
        name = parts.hostname or ""
        if host != "*" and not (
            (host.startswith("*.") and (name == host[2:] or name.endswith(host[1:])))
            or name == host
        ):
            continue
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if re.fullmatch(".*".join(map(re.escape, path.split("*"))), target or "/"):
            return True
    return False
