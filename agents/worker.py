"""The life of an agent, top to bottom.

1. Read settings, take the agent's id, start the runtime: Chromium with the extension, the
   bridge, K tab slots on the provider page (that is "cold start"), heartbeats every 2 s.
2. Run one RQ `SimpleWorker` per slot, each on its own thread: a worker takes a job only when
   its slot is free (idle, not parked, account budget left), so K slots take K jobs at once and
   RQ's registries stay the truth about what runs where. No fork per job: the browser stays warm.
3. The main thread owns the signals. SIGTERM/SIGINT drains: slots stop taking jobs, running
   ones get `drain_grace_s` to finish, then they are stopped and their jobs given back to the
   queue (without using an attempt). The agent also drains itself to recycle its browser after
   `recycle_after_jobs` jobs, above `recycle_memory_mb`, or when Chromium died; it then exits with
   `EXIT_RECYCLE` / `EXIT_CRASHED` and the pool supervisor starts a fresh one.
4. The main thread also runs RQ's registry maintenance once a minute (it calls failure
   callbacks, which use signals, so it cannot run on the slot threads).

A job whose agent dies instead is re-queued by the lease reaper (`semantest/leases.py`, run by
the controller) as soon as the agent's heartbeat expires.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue, SimpleWorker
from rq.registry import clean_registries
from rq.timeouts import TimerDeathPenalty
from rq.worker_registration import clean_worker_registry

from agents import jobs
from agents.early import AgentLoop
from agents.runtime import AgentRuntime
from semantest import keys
from semantest.config import Settings
from semantest.fleet import AgentState
from semantest.models import Priority

log = logging.getLogger(__name__)

#: Exit codes the pool supervisor reads: restart at once, or after a back-off.
EXIT_RECYCLE = 75
EXIT_CRASHED = 70
MAINTENANCE_S = 60
#: Seconds a drain waits for stopped attempts to give their jobs back.
ABORT_WAIT_S = 10
#: Seconds a slot thread blocks on the queues before it looks at its slot again.
DEQUEUE_POLL_S = 1


class SlotWorker(SimpleWorker):
    """An RQ worker for one tab slot, on its own thread of the agent process."""

    # Signals belong to the main thread; RQ's SIGALRM timeout cannot work on other threads.
    death_penalty_class = TimerDeathPenalty

    def __init__(self, *args: Any, runtime: AgentRuntime, slot: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = runtime
        self.slot = runtime.slots[slot]

    def _install_signal_handlers(self) -> None:
        """The agent's main thread handles signals and tells the slots to stop."""

    @property
    def should_run_maintenance_tasks(self) -> bool:
        """The main thread runs maintenance (see `run_agent`)."""
        return False

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> Any:
        """Take a job only while this slot can run one; None once the agent drains."""
        while self.runtime.state is not AgentState.DRAINING:
            if self.slot.parked or not self.runtime.has_budget(self.slot):
                self.heartbeat()
                time.sleep(DEQUEUE_POLL_S)
                continue
            # With `max_idle_time`, RQ's dequeue returns None after one empty poll.
            result = super().dequeue_job_and_maintain_ttl(DEQUEUE_POLL_S, DEQUEUE_POLL_S)
            if result is not None:
                return result
        return None


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc), so start-up time includes imports."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))


def run_agent(
    settings: Settings,
    name: str | None = None,
    provider: str = "sandbox",
    early: AgentLoop | None = None,
) -> int:
    """Start an agent and work until told to stop; returns the process exit code.

    `early` is the agent loop with Playwright's driver already starting (`agents/early.py`).
    """
    started = time.perf_counter() - process_age_s()
    if settings.redis_url is None or settings.chromium is None:
        raise SystemExit("agent needs SEMANTEST_REDIS_URL and a Chromium (SEMANTEST_CHROMIUM)")
    # The id names the browser profile: a restarted agent keeps its profile (and login).
    agent_id = name or socket.gethostname()
    boot = secrets.token_hex(4)
    stop: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: stop.append("SIGINT"))
    runtime = AgentRuntime(settings, agent_id, boot, provider, early)
    try:
        runtime.start(started)
    except BaseException:
        runtime.stop()
        raise
    jobs.install(runtime)
    queue_names = [keys.queue_name(provider, p.value) for p in Priority]  # high lane first
    workers: list[SlotWorker] = []
    threads: list[threading.Thread] = []
    for slot in runtime.slots:
        redis = Redis.from_url(settings.redis_url)
        queues = [Queue(n, connection=redis) for n in queue_names]
        worker = SlotWorker(
            queues,
            connection=redis,
            name=f"{slot.name}@{boot}",
            runtime=runtime,
            slot=slot.index,
        )
        workers.append(worker)
        threads.append(
            threading.Thread(target=_work, args=(worker,), name=f"slot-{slot.index}", daemon=True)
        )
    for thread in threads:
        thread.start()
    code = _supervise(settings, runtime, threads, stop)
    runtime.stop()
    log.info("agent %s stopped after %d jobs (exit %d)", agent_id, runtime.jobs_done, code)
    return code


def _work(worker: SlotWorker) -> None:
    jobs.current.slot = worker.slot.index
    jobs.current.worker = worker.name
    try:
        worker.work(logging_level=logging.getLevelName(log.getEffectiveLevel()))
    except Exception:
        log.exception("slot worker %s failed", worker.name)


def _supervise(
    settings: Settings, runtime: AgentRuntime, threads: list[threading.Thread], stop: list[str]
) -> int:
    """The main thread's loop: drain on a signal or a recycle reason, maintenance each minute."""
    maintenance_redis = Redis.from_url(settings.redis_url or "")
    next_maintenance = time.monotonic() + MAINTENANCE_S
    code = 0
    drain_deadline: float | None = None
    aborted = False
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.2)
            if drain_deadline is None:
                reason = stop[0] if stop else runtime.recycle_reason()
                if any(not t.is_alive() for t in threads) and not reason:
                    reason = "a slot worker stopped"
                if reason:
                    if not stop:
                        code = EXIT_CRASHED if runtime.crashed else EXIT_RECYCLE
                    log.info("agent %s draining: %s", runtime.agent_id, reason)
                    runtime.drain()
                    grace = 0 if runtime.crashed else settings.drain_grace_s
                    drain_deadline = time.monotonic() + grace
            elif runtime.busy == 0:
                break  # drained; slot threads blocked on Redis need not be waited for
            elif not aborted and (time.monotonic() > drain_deadline or len(stop) > 1):
                runtime.abort_all("drain", "the agent stopped before the job finished")
                aborted = True
            elif aborted and time.monotonic() > drain_deadline + ABORT_WAIT_S:
                log.error("attempts did not stop after the drain; leaving them to the reaper")
                break
            if time.monotonic() > next_maintenance:
                next_maintenance = time.monotonic() + MAINTENANCE_S
                _maintenance(maintenance_redis, runtime.provider)
    finally:
        maintenance_redis.close()
    return code


def _maintenance(redis: Redis, provider: str) -> None:
    """RQ's registry clean-up for our queues (one agent at a time, by RQ's own lock)."""
    for lane in Priority:
        queue = Queue(keys.queue_name(provider, lane.value), connection=redis)
        try:
            if queue.acquire_maintenance_lock():
                clean_registries(queue)
                clean_worker_registry(queue)
                queue.release_maintenance_lock()  # type: ignore[no-untyped-call]
        except Exception:
            log.exception("registry maintenance of %s failed", queue.name)
