"""The agent's engine: one browser, its bridge, its slot, and how one job is executed.

It lives on an asyncio loop in a background thread (Playwright is async; RQ's worker loop owns
the main thread and its signals). `execute()` is the whole of one attempt: lease the record,
run the prompt through the slot's addon, fetch and store the images, record the result once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiofiles
import aiofiles.os
from playwright.async_api import Playwright, async_playwright
from redis.asyncio import Redis

from agents import capture
from agents.browser import ExtensionBrowser, launch
from agents.slots import Slot
from extension_bridge.protocol import JobProgress, JobRun
from extension_bridge.server import BridgeServer
from semantest import keys
from semantest.config import Settings
from semantest.errors import GenerationFailed, JobFailure, RetryableFailure
from semantest.jobstore import JobStore, TerminalRecord
from semantest.models import JobError, JobRecord, JobStatus, Stage
from semantest.storage import LocalStorage

log = logging.getLogger(__name__)
T = TypeVar("T")

HEARTBEAT_S = 5.0
SLOT_OPEN_TIMEOUT_S = 30.0


class AgentRuntime:
    """Browser, bridge and slot of one agent, driven from RQ's thread through `call()`."""

    def __init__(self, settings: Settings, agent_id: str, provider: str = "sandbox") -> None:
        self.settings = settings
        self.agent_id = agent_id
        self.provider = provider
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="agent-loop", daemon=True
        )
        self.bridge: BridgeServer
        self.redis: Redis
        self.jobs: JobStore
        self.storage = LocalStorage(settings.images_dir)
        self.slot = Slot(name=f"{agent_id}/0", start_url=f"{settings.sandbox_url}/chat")
        self._playwright: Playwright | None = None
        self.browser: ExtensionBrowser | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.jobs_done = 0
        self.ready_after_s: float | None = None

    # -- driving from the RQ thread -------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the agent loop and wait for its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, started_at: float) -> None:
        """Start the loop thread, the browser, the bridge and the slot; block until ready."""
        self._thread.start()
        self.call(self._start(started_at), timeout=120)
        log.info("agent %s ready in %.2f s", self.agent_id, self.ready_after_s)

    def stop(self) -> None:
        """Close everything and stop the loop thread."""
        if self._thread.is_alive():
            self.call(self._stop(), timeout=30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    # -- life cycle -----------------------------------------------------------------------

    async def _start(self, started_at: float) -> None:
        assert self.settings.redis_url and self.settings.chromium
        self.redis = Redis.from_url(self.settings.redis_url)
        self.jobs = JobStore(self.redis)
        self.bridge = BridgeServer()
        await self.bridge.start()
        self._playwright = await async_playwright().start()
        self.browser = await launch(
            self._playwright,
            chromium=self.settings.chromium,
            profile_dir=self.settings.profiles_dir / self.agent_id,
            controller_url=self.settings.controller_url,
            bridge_url=self.bridge.url,
        )
        await self.slot.ready_tab(self.browser.context, self.bridge, SLOT_OPEN_TIMEOUT_S)
        self.ready_after_s = time.perf_counter() - started_at
        await self._beat()  # the first heartbeat already carries the cold-start time
        self._heartbeat = asyncio.create_task(self._heartbeats())

    async def _stop(self) -> None:
        if self._heartbeat:
            self._heartbeat.cancel()
        await self.redis.zrem(keys.AGENTS, self.agent_id)
        await self.redis.delete(keys.agent(self.agent_id))
        if self.browser:
            await self.browser.context.close()
        if self._playwright:
            await self._playwright.stop()
        await self.bridge.close()
        await self.redis.aclose()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._beat()
            except Exception:
                log.exception("heartbeat failed")

    async def _beat(self) -> None:
        info = {
            "id": self.agent_id,
            "pid": os.getpid(),
            "providers": [self.provider],
            "slots": 1,
            "busy": int(self.slot.lock.locked()),
            "jobsDone": self.jobs_done,
            "readyAfterS": self.ready_after_s,
            "extension": self.browser.configured if self.browser else None,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.AGENTS, {self.agent_id: time.time()})
            pipe.set(keys.agent(self.agent_id), json.dumps(info), ex=keys.AGENT_TTL_S)
            await pipe.execute()

    # -- one job --------------------------------------------------------------------------

    async def execute(self, job_id: str) -> dict[str, Any]:
        """Run one attempt of a job and record its outcome; re-raise retryable failures."""
        try:
            record = await self.jobs.update(job_id, self._lease)
        except TerminalRecord as done:  # canceled, or a duplicate delivery of a finished job
            return {"jobId": job_id, "status": done.record.status.value, "skipped": True}
        try:
            async with self.slot.lock:
                images = await self._run(record)
        except TerminalRecord as done:  # canceled while running: nothing more to record
            return {"jobId": job_id, "status": done.record.status.value, "skipped": True}
        except JobFailure as failure:
            return await self._record_failure(record, failure)
        except Exception as exc:  # a bug or browser crash: retryable, with the cause recorded
            log.exception("job %s crashed", job_id)
            return await self._record_failure(record, RetryableFailure(repr(exc), "AGENT_ERROR"))

        def succeed(r: JobRecord) -> None:
            r.status, r.progress, r.stage = JobStatus.SUCCEEDED, 100, Stage.DONE
            r.images, r.error, r.finished_at = images, None, time.time()

        try:
            await self.jobs.update(job_id, succeed)
        except TerminalRecord as done:  # another attempt or a cancel got there first
            return {"jobId": job_id, "status": done.record.status.value, "skipped": True}
        self.jobs_done += 1
        return {"jobId": job_id, "status": "succeeded", "images": [i.sha256 for i in images]}

    def _lease(self, r: JobRecord) -> None:
        r.status, r.stage, r.progress = JobStatus.LEASED, Stage.OPENING, 0
        r.attempts += 1
        r.agent = self.slot.name
        r.started_at = r.started_at or time.time()

    async def _run(self, record: JobRecord) -> list[Any]:
        assert self.browser is not None
        await self._progress(record.id, 5, Stage.OPENING, JobStatus.RUNNING)
        tab = await self.slot.ready_tab(self.browser.context, self.bridge, SLOT_OPEN_TIMEOUT_S)

        async def on_progress(msg: JobProgress) -> None:
            stage = Stage(msg.stage) if msg.stage in Stage._value2member_map_ else Stage.WAITING
            await self._progress(record.id, min(msg.progress, 89), stage)

        run = JobRun(
            tab_id=tab,
            job_id=record.id,
            prompt=record.prompt,
            options=record.options.model_dump(by_alias=True, exclude_none=True),
        )
        try:
            result = await self.bridge.run_job(run, on_progress, self.settings.job_timeout_s)
        except RetryableFailure:
            self.slot.forget_tab()
            raise
        if not result.images:
            raise GenerationFailed("the provider answered without an image")
        await self._progress(record.id, 90, Stage.STORING)
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
        self, job_id: str, progress: int, stage: Stage, status: JobStatus | None = None
    ) -> None:
        def change(r: JobRecord) -> None:
            r.progress, r.stage = max(r.progress, progress), stage
            if status is not None:
                r.status = status

        await self.jobs.update(job_id, change)

    async def _record_failure(self, record: JobRecord, failure: JobFailure) -> dict[str, Any]:
        retry = failure.retryable and record.attempts < self.settings.max_attempts
        artifacts = await self._evidence(record.id)

        def fail(r: JobRecord) -> None:
            r.error = JobError(code=failure.job_code, message=failure.message, retryable=retry)
            r.artifacts.update(artifacts)
            r.status = JobStatus.RETRYING if retry else JobStatus.FAILED
            if not retry:
                r.finished_at = time.time()

        await self.jobs.update(record.id, fail)
        log.warning(
            "job %s attempt %d: %s %s",
            record.id,
            record.attempts,
            failure.job_code,
            failure.message,
        )
        if retry:
            raise failure  # RQ's Retry re-queues it
        return {"jobId": record.id, "status": "failed", "error": failure.job_code}

    async def _evidence(self, job_id: str) -> dict[str, str]:
        """Screenshot and DOM of the slot's page, kept next to the images."""
        page = self.slot.page
        if page is None or page.is_closed():
            return {}
        folder: Path = self.settings.data_dir / "artifacts" / job_id
        try:
            await aiofiles.os.makedirs(folder, exist_ok=True)
            await page.screenshot(path=folder / "screenshot.png", timeout=5000)
            async with aiofiles.open(folder / "dom.html", "w") as f:
                await f.write(await page.content())
        except Exception as exc:
            log.warning("could not keep evidence of %s: %s", job_id, exc)
            return {}
        return {"screenshot": str(folder / "screenshot.png"), "dom": str(folder / "dom.html")}
