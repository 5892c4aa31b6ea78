"""The controller's once-a-second background work: RQ's retry scheduler and the lease reaper.

A retryable failure is re-queued by RQ after a back-off (`Retry(interval=...)`): RQ parks it in
the queue's ScheduledJobRegistry, and only an `RQScheduler` moves it back. RQ normally forks that
scheduler out of a worker; our agents hold a browser and an event-loop thread, so they must not
fork. The controller runs it instead, inline on a thread, once per second. Several controllers
share the work through RQ's own per-queue scheduler locks.

The same loop runs the lease reaper (`semantest.leases`), which re-queues the jobs of agents
that stopped heart-beating, the canaries (`semantest.canaries`), and once a minute the
sweeper that deletes failure evidence past `SEMANTEST_ARTIFACT_RETENTION_H`
(`controller.routes.artifacts.sweep`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from anyio import to_thread
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rq.scheduler import RQScheduler

from controller.routes import artifacts
from controller.submission import Submitter
from semantest import keys, providers
from semantest.canaries import Canaries
from semantest.config import Settings
from semantest.leases import Reaper
from semantest.models import JobRecord, Priority

log = logging.getLogger(__name__)
#: Seconds between two sweeps of expired failure evidence.
SWEEP_EVERY_S = 60.0


class RetryScheduler:
    """Enqueue due scheduled jobs of every known provider's queues, every `interval` seconds."""

    def __init__(
        self,
        redis: Redis,
        interval: int = 1,
        reaper: Reaper | None = None,
        settings: Settings | None = None,
        canaries: Canaries | None = None,
    ) -> None:
        self._redis = redis
        self._interval = interval
        self._settings = settings
        self._canaries = canaries
        self._next_sweep = 0.0
        self._providers = providers.names()
        self._scheduler = self._new_scheduler()
        self._reaper = reaper
        self._task: asyncio.Task[None] | None = None

    def _new_scheduler(self) -> RQScheduler:
        queues = [keys.queue_name(p, lane.value) for p in self._providers for lane in Priority]
        # An int: RQ sends `interval + 60` to Redis as a lock TTL, which must be integral.
        return RQScheduler(queues, connection=self._redis, interval=self._interval)

    def tick(self) -> None:
        """One pass: hold (or take) the queue locks, then move due jobs back to their queues."""
        if providers.names() != self._providers:  # a publish added a provider: its queues too
            self._scheduler.release_locks()  # type: ignore[no-untyped-call]
            self._providers = providers.names()
            self._scheduler = self._new_scheduler()
        # RQ's scheduler methods carry no annotations, hence the ignores.
        if not self._scheduler.acquired_locks or self._scheduler.should_reacquire_locks:
            self._scheduler.acquire_locks()  # type: ignore[no-untyped-call]
        if self._scheduler.acquired_locks:
            self._scheduler.heartbeat()  # type: ignore[no-untyped-call]
            self._scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]

    async def _run(self) -> None:
        while True:
            try:
                if self._reaper is not None:
                    await self._reaper.reap()
                await to_thread.run_sync(self.tick)
                if self._canaries is not None:
                    await self._canaries.tick()
                if self._settings is not None and time.monotonic() >= self._next_sweep:
                    self._next_sweep = time.monotonic() + SWEEP_EVERY_S
                    root = self._settings.data_dir / "artifacts"
                    retention = self._settings.artifact_retention_h
                    gone = await to_thread.run_sync(artifacts.sweep, root, retention)
                    if gone:
                        log.info("deleted the failure evidence of %d jobs", len(gone))
            except Exception:
                log.exception("scheduler pass failed; trying again")
            await asyncio.sleep(self._interval)

    @classmethod
    def for_controller(
        cls, redis: AsyncRedis, redis_sync: Redis, settings: Settings
    ) -> RetryScheduler:
        """The scheduler with the lease reaper, as the controller runs it."""
        submitter = Submitter(redis, settings)

        async def submit(record: JobRecord) -> None:
            await submitter.submit([record], {"jobId": record.id}, tenant=record.tenant)

        return cls(
            redis_sync,
            reaper=Reaper(redis, redis_sync, settings),
            settings=settings,
            canaries=Canaries(redis, settings, submit),
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rq-retry-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await to_thread.run_sync(self._scheduler.release_locks)
