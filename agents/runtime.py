"""The agent's engine: one browser, its bridge, K tab slots, heartbeats, and taking a lease.

It lives on an asyncio loop in a background thread (Playwright is async; RQ's worker threads
call in through `call()`). `execute()` takes one job's lease for a slot and hands the rest to
`agents.attempt.Attempt`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import psutil
from playwright.async_api import Playwright
from redis.asyncio import Redis

from addons import ADDONS_DIR
from addons.registry import folder_providers
from agents import cancels, chat_tabs
from agents.attempt import SLOT_OPEN_TIMEOUT_S, Attempt, Outcome
from agents.browser import ExtensionBrowser, launch
from agents.early import AgentLoop
from agents.slots import Slot
from browser_profiles.budget import AccountBudget
from browser_profiles.profiles import OpenProfile, open_agent_profile
from extension_bridge.protocol import Hello
from extension_bridge.server import BridgeServer
from semantest import attempts, keys, providers
from semantest.config import Settings
from semantest.errors import RetryableFailure
from semantest.fleet import AddonInUse, AgentHeartbeat, AgentState, SlotState
from semantest.jobstore import JobStore, TerminalRecord
from semantest.models import JobRecord, JobStatus, Stage
from semantest.redis_clients import async_client
from semantest.storage import LocalStorage, storage_from_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds a starting agent waits for its profile's lock (a predecessor may still be closing).
PROFILE_WAIT_S = 15.0
#: Extra seconds `call()` waits past an attempt's own deadline before giving up on the loop.
CALL_GRACE_S = 45.0


class AgentRuntime:
    """Browser, bridge and slots of one agent, driven from RQ's threads through `call()`."""

    def __init__(
        self,
        settings: Settings,
        agent_id: str,
        boot: str,
        provider: str = "sandbox",
        early: AgentLoop | None = None,
    ) -> None:
        self.settings = settings
        self.agent_id = agent_id
        self.boot = boot
        self.provider = provider
        # The loop thread runs already, and Playwright's driver is starting on it.
        self.early = early or AgentLoop()
        self.loop = self.early.loop
        self._thread = self.early.thread
        self.bridge: BridgeServer
        self.redis: Redis
        self.jobs: JobStore
        self.storage = storage_from_settings(settings)
        if isinstance(self.storage, LocalStorage):
            self.storage.sweep_partial()  # what agents killed mid-write left
        providers.install(folder_providers(ADDONS_DIR))  # start URLs are the manifests' data
        account = agent_id  # one profile per agent; its login is the account
        self.slots = [
            Slot(
                index=i,
                name=f"{agent_id}/{i}",
                provider=provider,
                account=account,
                start_url=providers.start_url(provider, settings),
            )
            for i in range(settings.slots)
        ]
        self._playwright: Playwright | None = None
        self.profile: OpenProfile | None = None
        self.browser: ExtensionBrowser | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._cancels: asyncio.Task[None] | None = None
        self.state = AgentState.STARTING
        self.started_at = time.time()
        self.ready_after_s: float | None = None
        self.rss_bytes = 0
        self.pss_bytes = 0
        #: Set when the browser died under us: the agent must restart.
        self.crashed: str | None = None
        self._closing = False

    # -- driving from RQ's threads ----------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the agent loop and wait for it; past `timeout` it is cancelled there."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # cancels the task on the loop, which releases what it holds
            with contextlib.suppress(concurrent.futures.CancelledError, Exception):
                future.result(5)
            raise

    def start(self, started_at: float) -> None:
        """Start the loop thread, the browser, the bridge and the slots; block until ready."""
        self.call(self._start(started_at), timeout=120)
        log.info("agent %s ready in %.2f s", self.agent_id, self.ready_after_s)

    def stop(self) -> None:
        """Close everything and stop the loop thread."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self._stop(), timeout=30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    @property
    def draining(self) -> bool:
        """Whether the agent has stopped taking jobs."""
        return self.state is AgentState.DRAINING

    def drain(self) -> None:
        """Stop taking jobs; running ones go on (thread-safe)."""
        self.state = AgentState.DRAINING

    def abort_all(self, kind: str, reason: str) -> None:
        """Stop every running attempt (thread-safe)."""

        def stop() -> None:
            for slot in self.slots:
                slot.stop_attempt(kind, reason)

        self.loop.call_soon_threadsafe(stop)

    def has_budget(self, slot: Slot) -> bool:
        """Whether the slot's account may run another job this hour (thread-safe)."""
        if not self.settings.account_budget_per_hour:
            return True
        left: int = self.call(self.budget.remaining(slot.account), timeout=5)
        return left > 0

    @property
    def jobs_done(self) -> int:
        """Jobs this agent has run to success."""
        return sum(s.jobs_done for s in self.slots)

    @property
    def busy(self) -> int:
        """Slots running a job now."""
        return sum(1 for s in self.slots if s.job_id is not None)

    def recycle_reason(self) -> str | None:
        """Why this browser should be replaced now (jobs done, memory, crash), if it should."""
        if self.crashed:
            return self.crashed
        limit = self.settings.recycle_after_jobs
        if limit and self.jobs_done >= limit:
            return f"recycling after {self.jobs_done} jobs"
        ceiling = self.settings.recycle_memory_mb * 1024 * 1024
        if ceiling and self.pss_bytes > ceiling:
            return f"recycling at {self.pss_bytes // 2**20} MB (PSS)"
        return None

    # -- life cycle -------------------------------------------------------------------------

    async def _start(self, started_at: float) -> None:
        assert self.settings.redis_url and self.settings.chromium
        self.redis = async_client(self.settings.redis_url)
        self.jobs = JobStore(self.redis, self.settings.result_cache_ttl_s)
        self.budget = AccountBudget(self.redis, self.settings.account_budget_per_hour)
        self.bridge = BridgeServer()
        await self.bridge.start()
        self._playwright = await asyncio.wrap_future(self.early.playwright)
        # Locked for the agent's life; a new one is copied from the prepared template.
        self.profile = await open_agent_profile(
            self._playwright, self.settings, self.agent_id, lock_timeout_s=PROFILE_WAIT_S
        )
        self.browser = await launch(
            self._playwright,
            chromium=self.settings.chromium,
            profile_dir=self.profile.path,
            controller_url=self.settings.controller_url,
            bridge_url=self.bridge.url,
            proxy=self.settings.browser_proxy,
            ignore_https_errors=self.settings.browser_ignore_https_errors,
        )
        self.browser.context.on("close", lambda _ctx: self._browser_closed())
        await asyncio.gather(*(self._open(slot) for slot in self.slots))
        self.ready_after_s = time.perf_counter() - started_at
        self.state = AgentState.READY
        await self.beat()  # the first heartbeat already carries the cold-start time
        self._heartbeat = asyncio.create_task(self._heartbeats())
        self._cancels = asyncio.create_task(cancels.watch(self))

    async def _open(self, slot: Slot) -> None:
        assert self.browser is not None
        try:
            await slot.ready_tab(self.browser.context, self.bridge, SLOT_OPEN_TIMEOUT_S)
        except RetryableFailure as exc:  # parked or slow: the slot tries again before a job
            log.warning("slot %s not ready at start: %s", slot.name, exc.message)
        slot.state = SlotState.IDLE

    def _browser_closed(self) -> None:
        if self._closing:
            return
        log.error("agent %s: the browser closed unexpectedly", self.agent_id)
        self.crashed = "the browser closed unexpectedly"
        for slot in self.slots:
            slot.stop_attempt("crash", self.crashed)

    async def _stop(self) -> None:
        if self._heartbeat:
            self._heartbeat.cancel()
        if self._cancels:
            self._cancels.cancel()
        with contextlib.suppress(Exception):
            await self.redis.zrem(keys.AGENTS, self.agent_id)
            await self.redis.delete(keys.agent(self.agent_id))
        with contextlib.suppress(Exception):  # else the lease reaper returns them
            await chat_tabs.return_follow_ups(self)
        self._closing = True  # closing on purpose is not a crash
        if self.browser:
            with contextlib.suppress(Exception):
                await self.browser.context.close()
        if self._playwright:
            with contextlib.suppress(Exception):
                await self._playwright.stop()
        if self.profile:
            self.profile.release()
        await self.bridge.close()
        await self.redis.aclose()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(keys.HEARTBEAT_S)
            try:
                self.rss_bytes, self.pss_bytes = await asyncio.to_thread(tree_memory)
                await self.beat()
            except Exception:
                log.exception("heartbeat failed")
            try:
                await chat_tabs.close_ended(self)
            except Exception:
                log.exception("closing ended chats failed")

    def hello(self) -> Hello | None:
        """What the extension said when it connected (its version and addons), if it has."""
        return self.bridge.state.hello

    def heartbeat(self) -> AgentHeartbeat:
        """What this agent says about itself now."""
        hello = self.hello()
        return AgentHeartbeat(
            id=self.agent_id,
            boot=self.boot,
            host=socket.gethostname(),
            pid=os.getpid(),
            state=self.state,
            providers=[self.provider],
            slots=[slot.info() for slot in self.slots],
            started_at=self.started_at,
            beat_at=time.time(),
            ready_after_s=self.ready_after_s,
            jobs_done=self.jobs_done,
            rss_bytes=self.rss_bytes,
            pss_bytes=self.pss_bytes,
            extension_version=hello.extension_version if hello else None,
            addons=[
                AddonInUse(id=a.id, version=a.version) for a in (hello.addons if hello else [])
            ],
        )

    async def beat(self) -> None:
        """Publish the heartbeat now."""
        beat = self.heartbeat()
        if self.settings.account_budget_per_hour:
            idle = [s for s in beat.slots if s.state is SlotState.IDLE]
            spent = {a for a in {s.account for s in idle} if await self.budget.remaining(a) <= 0}
            for info in idle:  # an idle slot whose account used its hour is parked
                if info.account in spent:
                    info.state, info.parked_reason = SlotState.PARKED, "budget"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.AGENTS, {self.agent_id: beat.beat_at})
            pipe.set(
                keys.agent(self.agent_id), beat.model_dump_json(by_alias=True), ex=keys.LEASE_TTL_S
            )
            await pipe.execute()

    # -- one attempt ------------------------------------------------------------------------

    async def execute(self, job_id: str, slot_index: int, worker: str) -> Outcome:
        """Run one attempt of a job on one slot and record how it ended (fenced by its lease)."""
        slot = self.slots[slot_index]
        deadline = asyncio.get_running_loop().time() + self.settings.job_timeout_s

        def take(r: JobRecord) -> None:
            if r.status in attempts.IN_FLIGHT:
                log.warning("job %s: taking over from %s", job_id, r.lease)
            r.attempts += 1
            r.status, r.stage, r.progress = JobStatus.LEASED, Stage.OPENING, 0
            r.agent, r.lease = slot.name, f"{worker}#{r.attempts}"
            r.started_at = r.started_at or time.time()

        if self.crashed or self.draining:
            # taken just as the agent began to stop: back to the queue, no attempt used
            return Outcome("retry", job_id, delay_s=0)
        if not await self.budget.try_take(slot.account):
            # the account's hour is used up (another slot got there first): the job waits
            return Outcome("retry", job_id, delay_s=1)
        try:
            record = await self.jobs.update(job_id, take)
        except (TerminalRecord, KeyError):  # canceled, finished, or expired: nothing to run
            return Outcome("skipped", job_id)
        lease = record.lease
        assert lease is not None
        slot.job_id, slot.state = job_id, SlotState.BUSY
        slot.abort.clear()
        try:
            return await Attempt(self, slot, record, lease, deadline).run()
        finally:
            slot.job_id = None
            slot.state = SlotState.DRAINING if self.draining else SlotState.IDLE

    async def tidy(self, slot: Slot) -> None:
        """Free the slot page's memory of finished jobs (see `Slot.tidy`)."""
        assert self.browser is not None
        try:
            await slot.tidy(self.browser.context, self.bridge, SLOT_OPEN_TIMEOUT_S)
        except Exception as exc:  # the next job reopens the slot
            log.warning("slot %s: tidying after a job failed: %s", slot.name, exc)
            slot.forget_tab()


def tree_memory() -> tuple[int, int]:
    """(RSS, PSS) in bytes of this process and its descendants (Playwright's driver, Chromium)."""
    me = psutil.Process()
    rss = pss = 0
    for proc in (me, *me.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()  # smaps_rollup: cheap
            rss, pss = rss + info.rss, pss + info.pss
    return rss, pss
