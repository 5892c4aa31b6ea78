"""`python -m agents.api_worker --provider openai [--name N] [--slots K]`: a browserless agent.

It serves an image API (`agents/api_providers.py`: `openai`, `stability`) from the same queues,
with the same job record, images, retries and webhooks as a browser agent: it is an agent
(heartbeat, lease, fleet entry, K RQ workers on threads, drain on SIGTERM) whose "slots" are
concurrent HTTP requests instead of tabs. It reuses the browser agent's parts wherever they
do not touch a browser: the RQ slot workers and claims (`agents.worker`), RQ's job function
(`agents.jobs.generate`, which calls `execute` here), the retry authority
(`semantest.attempts.decide`), the fenced record writes (`JobStore`), image checks and storage
(`agents.capture`), cancels (`agents.cancels`). A 429's `Retry-After` holds the retry back at
least that long. It starts no browser and no bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import socket
import sys
import threading
import time

import httpx

from agents import cancels
from agents.api_providers import API_PROVIDERS, ApiProvider, api_key, build
from agents.attempt import Outcome, give_back, settle_failure
from agents.capture import store_image
from agents.runtime import AgentRuntime, tree_memory
from agents.slots import Slot
from agents.worker import process_age_s, serve_runtime
from browser_profiles.budget import AccountBudget
from semantest import keys, metrics, tracing
from semantest.config import Settings, get_settings
from semantest.errors import GenerationFailed, JobFailure, RetryableFailure
from semantest.fleet import AgentState, SlotState
from semantest.jobstore import JobStore, StaleLease, TerminalRecord
from semantest.logs import bind, configure_logging
from semantest.models import ImageRecord, JobRecord, JobStatus, Stage
from semantest.redis_clients import async_client
from semantest.storage import LocalStorage, storage_from_settings

log = logging.getLogger(__name__)


class ApiRuntime(AgentRuntime):
    """The agent runtime of an API worker: K request slots, no browser, no bridge."""

    def __init__(self, settings: Settings, agent_id: str, boot: str, provider: str) -> None:
        # Not AgentRuntime.__init__: that one prepares a browser (Playwright's driver, tabs).
        if provider not in API_PROVIDERS:
            raise ValueError(f"{provider!r} is not an API provider ({', '.join(API_PROVIDERS)})")
        self.settings, self.agent_id, self.boot, self.provider = settings, agent_id, boot, provider
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="agent-loop", daemon=True
        )
        self._thread.start()
        self.storage = storage_from_settings(settings)
        if isinstance(self.storage, LocalStorage):
            self.storage.sweep_partial()
        self.slots = [
            Slot(index=i, name=f"{agent_id}/{i}", provider=provider, account=agent_id, start_url="")
            for i in range(settings.slots)
        ]
        self.state = AgentState.STARTING
        self.started_at = time.time()
        self.ready_after_s = None
        self.rss_bytes = self.pss_bytes = 0
        self.crashed = None
        self._closing = False
        self._heartbeat = self._cancels = None
        self.http: httpx.AsyncClient
        self.api: ApiProvider

    async def _start(self, started_at: float) -> None:
        assert self.settings.redis_url
        self.redis = async_client(self.settings.redis_url)
        self.jobs = JobStore(self.redis, self.settings.result_cache_ttl_s)
        self.budget = AccountBudget(self.redis, 0)
        timeout = httpx.Timeout(self.settings.job_timeout_s, connect=10)
        self.http = httpx.AsyncClient(timeout=timeout, trust_env=True)
        self.api = build(self.settings, self.provider, self.http)
        for slot in self.slots:
            slot.state = SlotState.IDLE
        self.ready_after_s = time.perf_counter() - started_at
        self.state = AgentState.READY
        await self.beat()
        self._heartbeat = asyncio.create_task(self._beats())
        self._cancels = asyncio.create_task(cancels.watch(self))

    async def _beats(self) -> None:
        while True:
            await asyncio.sleep(keys.HEARTBEAT_S)
            try:
                self.rss_bytes, self.pss_bytes = await asyncio.to_thread(tree_memory)
                await self.beat()
            except Exception:
                log.exception("heartbeat failed")

    async def _stop(self) -> None:
        for task in (self._heartbeat, self._cancels):
            if task:
                task.cancel()
        with contextlib.suppress(Exception):
            await self.redis.zrem(keys.AGENTS, self.agent_id)
            await self.redis.delete(keys.agent(self.agent_id))
        with contextlib.suppress(Exception):
            await self.http.aclose()
        await self.redis.aclose()

    def hello(self) -> None:
        """No extension: the heartbeat names no extension version and no addons."""
        return None

    def has_budget(self, slot: Slot) -> bool:
        """An API's own limits answer 429, which the retry policy handles: no hourly budget."""
        return True

    async def tidy(self, slot: Slot) -> None:
        """Nothing to tidy without a page."""
        slot.untidy = False

    async def execute(self, job_id: str, slot_index: int, worker: str) -> Outcome:
        """Take the job's lease for a slot, run one request, record how it ended."""
        slot = self.slots[slot_index]
        deadline = asyncio.get_running_loop().time() + self.settings.job_timeout_s

        def take(r: JobRecord) -> None:
            r.attempts += 1
            r.status, r.stage, r.progress = JobStatus.LEASED, Stage.OPENING, 0
            r.agent, r.lease = slot.name, f"{worker}#{r.attempts}"
            r.started_at = r.started_at or time.time()

        if self.draining:
            return Outcome("retry", job_id, delay_s=0)
        try:
            record = await self.jobs.update(job_id, take)
        except (TerminalRecord, KeyError):
            return Outcome("skipped", job_id)
        assert record.lease is not None
        slot.job_id, slot.state = job_id, SlotState.BUSY
        slot.abort.clear()
        try:
            return await ApiAttempt(self, slot, record, record.lease, deadline).run()
        finally:
            slot.job_id = None
            slot.state = SlotState.DRAINING if self.draining else SlotState.IDLE


class ApiAttempt:
    """One attempt of one job against an image API, fenced by its lease."""

    def __init__(
        self, rt: ApiRuntime, slot: Slot, record: JobRecord, lease: str, deadline: float
    ) -> None:
        self.rt, self.slot, self.record, self.lease, self.deadline = (
            rt,
            slot,
            record,
            lease,
            deadline,
        )

    async def run(self) -> Outcome:
        """Run under the deadline (stoppable by a cancel or a drain) and record the outcome."""
        record = self.record
        log.info("job %s attempt %d on %s", record.id, record.attempts, self.slot.name)
        work = asyncio.ensure_future(self._work())
        stopper = asyncio.ensure_future(self.slot.abort.wait())
        try:
            async with asyncio.timeout_at(self.deadline):
                await asyncio.wait((work, stopper), return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            pass
        finally:
            stopper.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
        outcome = await self._outcome(work)
        metrics.ATTEMPTS.labels(record.provider, outcome.kind).inc()
        log.info("job %s attempt %d: %s", record.id, record.attempts, outcome.kind)
        return outcome

    async def _outcome(self, work: asyncio.Future[list[ImageRecord]]) -> Outcome:
        job_id, slot = self.record.id, self.slot
        if work.cancelled():
            if slot.abort.is_set():
                if slot.abort_kind in ("stale", "canceled"):
                    return Outcome("skipped", job_id)
                if slot.abort_kind == "drain":
                    return await self._give_back(slot.abort_reason)
                return await self._failed(RetryableFailure(slot.abort_reason, "AGENT_ERROR"))
            limit = self.rt.settings.job_timeout_s
            return await self._failed(
                RetryableFailure(f"no result within the job timeout ({limit} s)", "TIMEOUT")
            )
        error = work.exception()
        if isinstance(error, (StaleLease, TerminalRecord)):
            return Outcome("skipped", job_id)
        if isinstance(error, JobFailure):
            return await self._failed(error)
        if error is not None:
            log.error("job %s crashed", job_id, exc_info=error)
            return await self._failed(RetryableFailure(repr(error)))
        images = work.result()

        def succeed(r: JobRecord) -> None:
            r.status, r.progress, r.stage = JobStatus.SUCCEEDED, 100, Stage.DONE
            r.images, r.error, r.finished_at, r.lease = images, None, time.time(), None

        try:
            await self.rt.jobs.update(job_id, succeed, lease=self.lease)
        except (StaleLease, TerminalRecord):
            return Outcome("skipped", job_id)
        slot.jobs_done += 1
        return Outcome("succeeded", job_id, detail={"images": [i.sha256 for i in images]})

    async def _work(self) -> list[ImageRecord]:
        rt, record = self.rt, self.record
        await self._progress(10, Stage.WAITING, JobStatus.RUNNING)
        key = api_key(rt.settings, record.provider, record.tenant)
        with tracing.span("semantest.api", attributes={"provider": record.provider}):
            images = await rt.api.generate(record, key)
        await self._progress(90, Stage.STORING)
        stored = []
        for image in images:
            if len(image.data) > rt.settings.max_image_bytes:
                limit = rt.settings.max_image_bytes
                raise GenerationFailed(f"image is {len(image.data)} bytes, over the {limit} limit")
            stored.append(
                await store_image(
                    rt.storage,
                    record.tenant,
                    image.data,
                    image.content_type,
                    source_url=image.source_url,
                )
            )
        return stored

    async def _progress(self, progress: int, stage: Stage, status: JobStatus | None = None) -> None:
        def change(r: JobRecord) -> None:
            r.progress, r.stage = max(r.progress, progress), stage
            if status is not None:
                r.status = status

        await self.rt.jobs.update(self.record.id, change, lease=self.lease)

    async def _failed(self, failure: JobFailure) -> Outcome:
        """Record the failed attempt as the retry policy decides (a 429 waits its notice)."""
        return await settle_failure(self.rt, self.record, self.lease, failure, failure.retryable)

    async def _give_back(self, reason: str) -> Outcome:
        return await give_back(self.rt, self.record, self.lease, reason)


def run_api_worker(settings: Settings, name: str | None, provider: str) -> int:
    """Start an API worker and work until told to stop; returns the exit code."""
    started = time.perf_counter() - process_age_s()
    if settings.redis_url is None:
        raise SystemExit("the API worker needs SEMANTEST_REDIS_URL")
    agent_id = name or f"{socket.gethostname()}-{provider}"
    bind(agent=agent_id)
    tracing.setup(settings, "semantest-api-worker")
    boot = secrets.token_hex(4)
    return serve_runtime(
        settings, lambda: ApiRuntime(settings, agent_id, boot, provider), started, kind="API worker"
    )


def main() -> None:
    """Parse arguments and run the API worker until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m agents.api_worker", description=__doc__)
    parser.add_argument("--provider", required=True, choices=API_PROVIDERS)
    parser.add_argument("--name", help="agent id (default: <host>-<provider>)")
    parser.add_argument("--slots", type=int, help="concurrent requests (default: SEMANTEST_SLOTS)")
    args = parser.parse_args()
    settings = get_settings()
    if args.slots is not None:
        if not 1 <= args.slots <= 16:
            parser.error("--slots must be between 1 and 16")
        settings = settings.model_copy(update={"slots": args.slots})
    configure_logging(settings.log_level, "agent", settings.log_format)
    sys.exit(run_api_worker(settings, args.name, args.provider))


if __name__ == "__main__":
    main()
