"""The loopback WebSocket endpoint an agent hosts for the extension in its own browser.

One `BridgeServer` per browser. The extension connects to `url` (which carries a random token,
so another local process cannot pose as the extension), says `hello`, and announces each addon
tab with `addon.ready`. `run_job()` sends a `job.run` to a tab and resolves when that job's
`job.result` or `job.error` comes back, passing `job.progress` messages to a callback;
`cancel_job()` tells the addon to stop one. Each tab is its own channel: jobs of different
tabs run concurrently over the one socket, matched by job id.

Progress callbacks run as tasks, in order per job, so a slow progress write of one tab never
holds up the messages of another; a failing one (say, Redis briefly unreachable) is logged and
dropped: it must not close the socket, which would fail every other tab's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from extension_bridge import protocol
from extension_bridge.protocol import (
    AddonReady,
    Hello,
    JobCancel,
    JobErrorMessage,
    JobProgress,
    JobResult,
    JobRun,
    Ping,
    Pong,
)
from semantest.errors import GenerationFailed, RetryableFailure

log = logging.getLogger(__name__)

ProgressCallback = Callable[[JobProgress], Awaitable[None]]


@dataclass
class _PendingJob:
    done: asyncio.Future[JobResult]
    on_progress: ProgressCallback
    #: The latest progress report being written; each waits for the one before (order kept).
    reporting: asyncio.Task[None] | None = None


@dataclass
class BridgeState:
    """What the agent knows about its extension right now."""

    hello: Hello | None = None
    tabs: dict[int, AddonReady] = field(default_factory=dict)


class BridgeServer:
    """Serve the bridge on 127.0.0.1 and relay jobs to addon tabs."""

    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(24)
        self.state = BridgeState()
        self._server: Server | None = None
        self._conn: ServerConnection | None = None
        self._pending: dict[str, _PendingJob] = {}
        self._changed = asyncio.Condition()
        self.port = 0

    @property
    def url(self) -> str:
        """What the extension connects to."""
        return f"ws://127.0.0.1:{self.port}/bridge?token={self.token}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await serve(self._handle, "127.0.0.1", 0, max_size=64 * 1024 * 1024)
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def close(self) -> None:
        """Stop listening and fail every pending job as retryable."""
        self._fail_pending("bridge closed")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for_tab(self, predicate: Callable[[AddonReady], bool], timeout: float) -> int:
        """Wait until an addon tab matching `predicate` is ready; return its tab id."""

        def find() -> int | None:
            return next((t for t, r in self.state.tabs.items() if predicate(r)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: find() is not None), timeout)
        tab = find()
        assert tab is not None
        return tab

    async def cancel_job(self, tab_id: int, job_id: str, reason: str) -> None:
        """Ask the addon in `tab_id` to stop `job_id`; best effort (the tab may be gone)."""
        self._pending.pop(job_id, None)
        if self._conn is None:
            return
        cancel = JobCancel(tab_id=tab_id, job_id=job_id, reason=reason)
        with contextlib.suppress(ConnectionClosed):
            await self._conn.send(protocol.dump(cancel))

    async def run_job(
        self, run: JobRun, on_progress: ProgressCallback, timeout: float
    ) -> JobResult:
        """Send `run` to its tab and return the addon's result.

        Raises `GenerationFailed` for a non-retryable page error and `RetryableFailure` for a
        retryable one, a lost bridge, or a timeout.
        """
        if self._conn is None:
            raise RetryableFailure("extension is not connected to the bridge", "BRIDGE_DOWN")
        loop = asyncio.get_running_loop()
        pending = _PendingJob(loop.create_future(), on_progress)
        self._pending[run.job_id] = pending
        try:
            await self._conn.send(protocol.dump(run))
            result = await asyncio.wait_for(pending.done, timeout)
            if pending.reporting is not None:
                await pending.reporting  # progress lands before the caller records more
            return result
        except TimeoutError:
            raise RetryableFailure(
                f"no result from the addon within {timeout:.0f} s", "PROVIDER_TIMEOUT"
            ) from None
        except ConnectionClosed:
            raise RetryableFailure("bridge connection lost", "BRIDGE_DOWN") from None
        finally:
            self._pending.pop(run.job_id, None)

    async def _handle(self, conn: ServerConnection) -> None:
        query = parse_qs(urlsplit(conn.request.path if conn.request else "").query)
        if not secrets.compare_digest(query.get("token", [""])[0], self.token):
            await conn.close(code=4401, reason="bad bridge token")
            return
        if self._conn is not None:  # a reconnect replaces the old socket
            await self._conn.close()
        self._conn = conn
        try:
            async for frame in conn:
                await self._dispatch(conn, frame)
        except ConnectionClosed:
            pass
        finally:
            if self._conn is conn:
                self._conn = None
                self.state.tabs.clear()
                self._fail_pending("extension disconnected from the bridge")

    async def _dispatch(self, conn: ServerConnection, frame: str | bytes) -> None:
        try:
            msg = protocol.parse(frame)
        except protocol.ProtocolError as exc:
            log.warning("dropping bad bridge frame: %s", exc)
            return
        match msg:
            case Ping():
                await conn.send(protocol.dump(Pong()))
            case Hello():
                self.state.hello = msg
                await self._notify()
            case AddonReady():
                self.state.tabs[msg.tab_id] = msg
                await self._notify()
            case JobProgress():
                if (pending := self._pending.get(msg.job_id)) is not None:
                    pending.reporting = asyncio.create_task(
                        _report(pending, pending.reporting, msg)
                    )
            case JobResult():
                if (pending := self._pending.get(msg.job_id)) and not pending.done.done():
                    pending.done.set_result(msg)
            case JobErrorMessage():
                if (pending := self._pending.get(msg.job_id)) and not pending.done.done():
                    cls = RetryableFailure if msg.retryable else GenerationFailed
                    failure = cls(msg.message, msg.code, retry_after_s=msg.retry_after_s)
                    pending.done.set_exception(failure)
            case _:
                log.debug("ignoring %s from the extension", msg.type)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _fail_pending(self, reason: str) -> None:
        for pending in self._pending.values():
            if not pending.done.done():
                pending.done.set_exception(RetryableFailure(reason, "BRIDGE_DOWN"))


async def _report(
    pending: _PendingJob, before: asyncio.Task[None] | None, msg: JobProgress
) -> None:
    """Write one progress step after the previous one of the same job."""
    if before is not None:
        await before
    try:
        await pending.on_progress(msg)
    except Exception:  # the job goes on; only this progress step is lost
        log.exception("progress of job %s not recorded", msg.job_id)
