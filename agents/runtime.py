"""The agent's engine: one browser, its bridge, K tab slots, and how one attempt is executed.

It lives on an asyncio loop in a background thread (Playwright is async; RQ's worker threads
call in through `call()`). `execute()` is the whole of one attempt on one slot: take the lease,
run the prompt through the slot's addon under one deadline, fetch and store the images, and
record the outcome — every record write fenced by the attempt's lease token, so an attempt that
lost its lease (its agent was presumed dead) can never overwrite the one that replaced it.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiofiles
import aiofiles.os
import psutil
from playwright.async_api import Playwright
from redis.asyncio import Redis

from agents import capture
from agents.browser import ExtensionBrowser, launch
from agents.early import AgentLoop
from agents.slots import RELOAD_EVERY_JOBS, Slot
from browser_profiles.budget import AccountBudget
from browser_profiles.profiles import OpenProfile, open_agent_profile
from extension_bridge.protocol import JobProgress, JobRun
from extension_bridge.server import BridgeServer
from semantest import attempts, keys
from semantest.config import Settings
from semantest.errors import GenerationFailed, JobFailure, RetryableFailure
from semantest.fleet import AddonInUse, AgentHeartbeat, AgentState, SlotState
from semantest.jobstore import JobStore, StaleLease, TerminalRecord
from semantest.models import ImageRecord, JobRecord, JobStatus, Stage
from semantest.redis_clients import async_client
from semantest.storage import LocalStorage

log = logging.getLogger(__name__)
T = TypeVar("T")

SLOT_OPEN_TIMEOUT_S = 30.0
#: Addon error codes that say the page (not the job) is unusable: the slot parks for that long
#: (someone must sign in; a provider's rate limit lasts a while), so the retry goes elsewhere.
PARKING_CODES = {"LOGGED_OUT": ("logged-out", 60.0), "RATE_LIMITED": ("rate-limited", 30.0)}
#: Seconds a starting agent waits for its profile's lock (a predecessor may still be closing).
PROFILE_WAIT_S = 15.0
#: Extra seconds `call()` waits past an attempt's own deadline before giving up on the loop.
CALL_GRACE_S = 45.0


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as RQ's job function needs to know it."""

    kind: Literal["succeeded", "retry", "failed", "skipped"]
    job_id: str
    delay_s: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


class Aborted(Exception):
    """The slot's attempt was stopped from outside (see `Slot.stop_attempt`)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


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
        self.storage = LocalStorage(settings.images_dir)
        account = agent_id  # one profile per agent; its login is the account
        self.slots = [
            Slot(
                index=i,
                name=f"{agent_id}/{i}",
                provider=provider,
                account=account,
                start_url=f"{settings.sandbox_url}/chat",
            )
            for i in range(settings.slots)
        ]
        self._playwright: Playwright | None = None
        self.profile: OpenProfile | None = None
        self.browser: ExtensionBrowser | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.state = AgentState.STARTING
        self.started_at = time.time()
        self.jobs_done = 0
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
        self.jobs = JobStore(self.redis)
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
        )
        self.browser.context.on("close", lambda _ctx: self._browser_closed())
        await asyncio.gather(*(self._open(slot) for slot in self.slots))
        self.ready_after_s = time.perf_counter() - started_at
        self.state = AgentState.READY
        await self._beat()  # the first heartbeat already carries the cold-start time
        self._heartbeat = asyncio.create_task(self._heartbeats())

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
        with contextlib.suppress(Exception):
            await self.redis.zrem(keys.AGENTS, self.agent_id)
            await self.redis.delete(keys.agent(self.agent_id))
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
                await self._beat()
            except Exception:
                log.exception("heartbeat failed")

    def heartbeat(self) -> AgentHeartbeat:
        """What this agent says about itself now."""
        hello = self.bridge.state.hello
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

    async def _beat(self) -> None:
        beat = self.heartbeat()
        if self.settings.account_budget_per_hour:
            for info in beat.slots:  # an idle slot whose account used its hour is parked
                if info.state is SlotState.IDLE and await self.budget.remaining(info.account) <= 0:
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
            return await self._attempt(record, slot, lease, deadline)
        finally:
            slot.job_id = None
            slot.state = SlotState.DRAINING if self.draining else SlotState.IDLE

    async def _attempt(self, record: JobRecord, slot: Slot, lease: str, deadline: float) -> Outcome:
        job_id = record.id
        timer = asyncio.timeout_at(deadline)
        try:
            async with timer:
                images = await self._abortable(slot, self._run(record, slot, lease, deadline))
        except (StaleLease, TerminalRecord):
            return Outcome("skipped", job_id)
        except Aborted as stop:
            await self._cancel_in_tab(slot, job_id, stop.reason)
            if stop.kind == "stale":
                return Outcome("skipped", job_id)
            if stop.kind == "drain":
                return await self._give_back(record, lease, stop.reason)
            return await self._failed(
                record, slot, lease, RetryableFailure(stop.reason, "AGENT_ERROR")
            )
        except TimeoutError:
            if not timer.expired():
                raise
            await self._cancel_in_tab(slot, job_id, "deadline")
            failure = RetryableFailure(
                f"no result within the job timeout ({self.settings.job_timeout_s} s)", "TIMEOUT"
            )
            return await self._failed(record, slot, lease, failure)
        except JobFailure as failure:
            return await self._failed(record, slot, lease, failure)
        except Exception as exc:  # a bug or a browser crash: retryable, with the cause recorded
            log.exception("job %s crashed", job_id)
            return await self._failed(record, slot, lease, RetryableFailure(repr(exc)))

        def succeed(r: JobRecord) -> None:
            r.status, r.progress, r.stage = JobStatus.SUCCEEDED, 100, Stage.DONE
            r.images, r.error, r.finished_at, r.lease = images, None, time.time(), None

        try:
            await self.jobs.update(job_id, succeed, lease=lease)
        except (StaleLease, TerminalRecord):  # another attempt or a cancel got there first
            return Outcome("skipped", job_id)
        self.jobs_done += 1
        slot.jobs_done += 1
        slot.untidy = True
        if slot.jobs_done % RELOAD_EVERY_JOBS == 0:  # bounded growth under sustained load
            await self.tidy(slot, reload=True)
        return Outcome("succeeded", job_id, detail={"images": [i.sha256 for i in images]})

    async def tidy(self, slot: Slot, *, reload: bool) -> None:
        """Free the slot page's memory of finished jobs (see `Slot.tidy`)."""
        assert self.browser is not None
        try:
            await slot.tidy(self.browser.context, self.bridge, SLOT_OPEN_TIMEOUT_S, reload=reload)
        except Exception as exc:  # the next job reopens the slot
            log.warning("slot %s: tidying after a job failed: %s", slot.name, exc)
            slot.forget_tab()

    async def _abortable(self, slot: Slot, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` until it ends or the slot's attempt is stopped from outside."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(slot.abort.wait())
        try:
            await asyncio.wait((task, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task.cancelled() or not task.done():
            raise Aborted(slot.abort_kind, slot.abort_reason)
        return task.result()

    async def _run(
        self, record: JobRecord, slot: Slot, lease: str, deadline: float
    ) -> list[ImageRecord]:
        assert self.browser is not None
        loop = asyncio.get_running_loop()
        await self._progress(record.id, lease, 5, Stage.OPENING, JobStatus.RUNNING)
        open_within = min(SLOT_OPEN_TIMEOUT_S, max(1.0, deadline - loop.time()))
        tab = await slot.ready_tab(self.browser.context, self.bridge, open_within)

        async def on_progress(msg: JobProgress) -> None:
            stage = Stage(msg.stage) if msg.stage in Stage._value2member_map_ else Stage.WAITING
            try:
                await self._progress(record.id, lease, min(msg.progress, 89), stage)
            except (StaleLease, TerminalRecord):
                slot.stop_attempt("stale", "another attempt holds the job now")

        left_ms = int((deadline - loop.time()) * 1000)
        run = JobRun(
            tab_id=tab,
            job_id=record.id,
            prompt=record.prompt,
            options=record.options.model_dump(by_alias=True, exclude_none=True),
            timeout_ms=max(1, left_ms),
        )
        try:
            # The bridge's own wait ends just after the deadline, so the deadline decides.
            result = await self.bridge.run_job(run, on_progress, left_ms / 1000 + 1)
        except JobFailure as failure:
            if failure.job_code in PARKING_CODES:
                reason, seconds = PARKING_CODES[failure.job_code]
                slot.park(reason, seconds)
                await self._beat()  # show the parked slot in /fleet now, not at the next beat
            elif failure.retryable:
                slot.forget_tab()
            raise
        if not result.images:
            raise GenerationFailed("the provider answered without an image")
        await self._progress(record.id, lease, 90, Stage.STORING)
        stored = []
        for image in result.images:
            data, content_type = await capture.fetch_bytes(
                self.browser.context.request, image, self.settings.max_image_bytes
            )
            stored.append(
                await capture.store_image(
                    self.storage,
                    record.tenant,
                    data,
                    content_type,
                    controller_url=self.settings.controller_url,
                    source_url=image.url,
                )
            )
        return stored

    async def _progress(
        self, job_id: str, lease: str, progress: int, stage: Stage, status: JobStatus | None = None
    ) -> None:
        def change(r: JobRecord) -> None:
            r.progress, r.stage = max(r.progress, progress), stage
            if status is not None:
                r.status = status

        await self.jobs.update(job_id, change, lease=lease)

    async def _cancel_in_tab(self, slot: Slot, job_id: str, reason: str) -> None:
        """Tell the addon to stop, and reload the page before the slot's next job."""
        if slot.tab_id is not None:
            await self.bridge.cancel_job(slot.tab_id, job_id, reason)
        slot.forget_tab()

    async def _failed(
        self, record: JobRecord, slot: Slot, lease: str, failure: JobFailure
    ) -> Outcome:
        """Record a failed attempt as the retry policy decides; the outcome tells RQ."""
        artifacts = await self._evidence(record.id, slot)
        decided: list[attempts.Decision] = []

        def fail(r: JobRecord) -> None:
            decision = attempts.decide(r, failure.retryable, self.settings)
            attempts.record_failure(r, failure.job_code, failure.message, decision, artifacts)
            decided.append(decision)

        try:
            await self.jobs.update(record.id, fail, lease=lease)
        except (StaleLease, TerminalRecord):
            return Outcome("skipped", record.id)
        (decision,) = decided
        log.warning(
            "job %s attempt %d: %s %s (%s)",
            record.id,
            record.attempts,
            failure.job_code,
            failure.message,
            f"retry in {decision.delay_s} s" if decision.retry else "failed",
        )
        if decision.retry:
            return Outcome("retry", record.id, delay_s=decision.delay_s)
        return Outcome("failed", record.id, detail={"error": failure.job_code})

    async def _give_back(self, record: JobRecord, lease: str, reason: str) -> Outcome:
        """The agent is stopping: the job goes back to the queue without using an attempt."""
        try:
            await self.jobs.update(
                record.id, lambda r: attempts.requeue_uncharged(r, reason), lease=lease
            )
        except (StaleLease, TerminalRecord):
            return Outcome("skipped", record.id)
        log.info("job %s given back: %s", record.id, reason)
        return Outcome("retry", record.id, delay_s=0)

    async def _evidence(self, job_id: str, slot: Slot) -> dict[str, str]:
        """Screenshot and DOM of the slot's page, kept next to the images."""
        page = slot.page
        if page is None or page.is_closed():
            return {}
        folder: Path = self.settings.data_dir / "artifacts" / job_id
        try:
            await aiofiles.os.makedirs(folder, exist_ok=True)
            await page.screenshot(path=folder / "screenshot.png", timeout=5000)
            async with aiofiles.open(folder / "dom.html", "w") as f:
                await f.write(await asyncio.wait_for(page.content(), 5))
        except Exception as exc:
            log.warning("could not keep evidence of %s: %s", job_id, exc)
            return {}
        return {"screenshot": str(folder / "screenshot.png"), "dom": str(folder / "dom.html")}


def tree_memory() -> tuple[int, int]:
    """(RSS, PSS) in bytes of this process and its descendants (Playwright's driver, Chromium)."""
    me = psutil.Process()
    rss = pss = 0
    for proc in (me, *me.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()  # smaps_rollup: cheap
            rss, pss = rss + info.rss, pss + info.pss
    return rss, pss
