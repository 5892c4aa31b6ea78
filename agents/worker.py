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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue, Retry, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job
from rq.registry import StartedJobRegistry, clean_registries
from rq.timeouts import TimerDeathPenalty
from rq.worker import WorkerStatus
from rq.worker_registration import clean_worker_registry

from agents import jobs
from agents.early import AgentLoop
from agents.runtime import AgentRuntime
from semantest import keys, metrics, tracing
from semantest.config import Settings
from semantest.fleet import AgentState
from semantest.logs import bind, bound
from semantest.models import Priority
from semantest.redis_clients import sync_client

log = logging.getLogger(__name__)

#: Exit codes the pool supervisor reads: restart at once, or after a back-off.
EXIT_RECYCLE = 75
EXIT_CRASHED = 70
MAINTENANCE_S = 60
#: Seconds a drain waits for stopped attempts to give their jobs back.
ABORT_WAIT_S = 10
#: Seconds a slot thread blocks on the queues before it looks at its slot again.
DEQUEUE_POLL_S = 1

#: Claim one job and note it in the worker's claim list in one atomic step (a worker killed right
#: after leaves the job in its claim list, never nowhere). Order: the slot's own list (a chat's
#: follow-ups), then per lane, highest first, RQ's queue list (retries and jobs given back) and
#: then the lane's tenants round-robin: the ring is rotated one tenant per look, so each tenant
#: with waiting jobs gets every n-th claim. KEYS: slot list, claim list, then (RQ queue, ring,
#: depth counter) per lane. ARGV[1]: RQ's job key prefix, ARGV[2]: RQ's queue key prefix.
#: Returns {queue key of the job's origin, job id} or false.
CLAIM_LUA = """
local function claimed(id)
  redis.call('RPUSH', KEYS[2], id)
  local origin = redis.call('HGET', ARGV[1] .. id, 'origin')
  return {origin and (ARGV[2] .. origin) or '', id}
end
local id = redis.call('LPOP', KEYS[1])
if id then return claimed(id) end
for i = 3, #KEYS, 3 do
  id = redis.call('LPOP', KEYS[i])
  if id then return claimed(id) end
  local ring = KEYS[i + 1]
  for _ = 1, redis.call('LLEN', ring) do
    local tenant = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
    local queue = ring .. ':' .. tenant
    id = redis.call('LPOP', queue)
    if id then
      redis.call('DECR', KEYS[i + 2])
      if redis.call('LLEN', queue) == 0 then redis.call('LREM', ring, -1, tenant) end
      return claimed(id)
    end
    redis.call('LREM', ring, -1, tenant)
  end
end
return false
"""


def claim_keys(worker: str, provider: str) -> list[str]:
    """The KEYS of `CLAIM_LUA` for one slot's worker (ARGV: `CLAIM_ARGS`)."""
    out = [keys.slot_queue(worker), keys.claims(worker)]
    for lane in keys.LANES:
        out += [
            keys.rq_queue_key(keys.queue_name(provider, lane)),
            keys.fair_ring(provider, lane),
            keys.lane_depth(provider, lane),
        ]
    return out


#: The ARGV of `CLAIM_LUA`: RQ's key prefixes of jobs and queues.
CLAIM_ARGS = [Job.redis_job_namespace_prefix, Queue.redis_queue_namespace_prefix]


class SlotWorker(SimpleWorker):
    """An RQ worker for one tab slot, on its own thread of the agent process."""

    # Signals belong to the main thread; RQ's SIGALRM timeout cannot work on other threads.
    death_penalty_class = TimerDeathPenalty

    def __init__(self, *args: Any, runtime: AgentRuntime, slot: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = runtime
        self.slot = runtime.slots[slot]
        self.claim_key = keys.claims(self.name)
        self._claim = self.connection.register_script(CLAIM_LUA)
        provider = runtime.provider
        self._claim_keys = claim_keys(self.name, provider)
        # Retries and given-back jobs reach RQ's lists without a doorbell: a slot looks at
        # least every DEQUEUE_POLL_S.
        self._bells = [keys.slot_doorbell(self.name), keys.doorbell(provider)]
        self.connection.sadd(keys.CLAIMERS, self.name)

    def _install_signal_handlers(self) -> None:
        """The agent's main thread handles signals and tells the slots to stop."""

    @property
    def should_run_maintenance_tasks(self) -> bool:
        """The main thread runs maintenance (see `run_agent`)."""
        return False

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Take a job only while this slot can run one; None once the agent drains."""
        self.set_state(WorkerStatus.IDLE)
        while self.runtime.state is not AgentState.DRAINING and not self.runtime.crashed:
            self.heartbeat()
            if self.slot.parked or not self.runtime.has_budget(self.slot):
                time.sleep(DEQUEUE_POLL_S)
                continue
            taken = self._take()
            if taken is not None:
                return taken
            if self.slot.untidy:  # idle for a poll: a good moment to free the page's memory
                self.runtime.call(self.runtime.tidy(self.slot), timeout=60)
        return None

    def _take(self) -> tuple[Job, Queue] | None:
        """Claim one job (see `CLAIM_LUA`); when there is none, wait up to DEQUEUE_POLL_S for
        a doorbell (rung by every submission) and look once more."""
        found = self._claim(keys=self._claim_keys, args=CLAIM_ARGS)
        if not found:
            if self.connection.blpop(self._bells, DEQUEUE_POLL_S) is None:
                return None
            found = self._claim(keys=self._claim_keys, args=CLAIM_ARGS)
            if not found:
                return None
        queue_key, job_id = (v.decode() for v in found)
        queue = next((q for q in self.queues if q.key == queue_key), self.queues[1])
        try:
            job = Job.fetch(job_id, connection=self.connection, serializer=self.serializer)
        except NoSuchJobError:  # deleted while queued
            self.connection.lrem(self.claim_key, 1, job_id)
            return None
        self.log.info("Worker %s: %s: %s", self.name, queue.name, job.id)
        return job, queue

    def execute_job(self, job: Job, queue: Queue) -> None:
        """RQ's SimpleWorker step, with the claim dropped once RQ's registry holds the job."""
        execution = self.prepare_execution(job)
        self.connection.lrem(self.claim_key, 1, job.id)
        with bound(job_id=job.id):  # RQ's lines and the attempt's (it runs in this context)
            self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)

    def handle_job_retry(
        self,
        job: Job,
        queue: Queue,
        retry: Retry,
        started_job_registry: StartedJobRegistry,
        execution: Execution,
    ) -> None:
        """RQ's retry, then, for a job failing over to another provider (the attempt chose
        it: `Retry.semantest_queue`), the move to that provider's queue, at its front."""
        super().handle_job_retry(job, queue, retry, started_job_registry, execution)
        target = getattr(retry, "semantest_queue", None)
        if not target or target == queue.name:
            return
        other = Queue(target, connection=self.connection, serializer=self.serializer)
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.key, 0, job.id)
            pipe.zrem(queue.scheduled_job_registry.key, job.id)
            pipe.execute()
        other._enqueue_job(job, at_front=True)  # its slots look within DEQUEUE_POLL_S
        self.log.info("Worker %s: %s fails over to %s", self.name, job.id, target)

    def teardown(self) -> None:
        """Leave the claimers when nothing is claimed (a dead worker's claims are reaped)."""
        super().teardown()  # type: ignore[no-untyped-call]
        if not self.connection.llen(self.claim_key):
            self.connection.srem(keys.CLAIMERS, self.name)


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
    bind(agent=agent_id)
    tracing.setup(settings, "semantest-agent")
    boot = secrets.token_hex(4)
    return serve_runtime(
        settings,
        lambda: AgentRuntime(settings, agent_id, boot, provider, early),
        started,
        kind="agent",
    )


def serve_runtime(
    settings: Settings, make: Callable[[], AgentRuntime], started: float, kind: str
) -> int:
    """Run one process's slots (a browser agent or an API worker) until told to stop.

    Signals are taken before the runtime starts; each slot gets an RQ worker on its own
    thread, and the main thread supervises them (`_supervise`). Returns the exit code.
    """
    stop: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: stop.append("SIGINT"))
    runtime = make()
    try:
        runtime.start(started)
    except BaseException:
        runtime.stop()
        raise
    provider, agent_id = runtime.provider, runtime.agent_id
    jobs.install(runtime)
    metrics.AGENT_STARTS.labels(provider).inc()
    metrics.AGENT_COLD_START.labels(provider).observe(runtime.ready_after_s or 0.0)
    metrics.serve(settings, "agent", agent_id)
    queue_names = [keys.queue_name(provider, lane) for lane in keys.LANES]  # high first
    threads: list[threading.Thread] = []
    for slot in runtime.slots:
        redis = sync_client(settings.redis_url or "")
        queues = [Queue(n, connection=redis) for n in queue_names]
        worker = SlotWorker(
            queues,
            connection=redis,
            name=f"{slot.name}@{runtime.boot}",
            runtime=runtime,
            slot=slot.index,
        )
        threads.append(
            threading.Thread(target=_work, args=(worker,), name=f"slot-{slot.index}", daemon=True)
        )
    for thread in threads:
        thread.start()
    code = _supervise(settings, runtime, threads, stop)
    runtime.stop()
    log.info("%s %s stopped after %d jobs (exit %d)", kind, agent_id, runtime.jobs_done, code)
    return code


def _work(worker: SlotWorker) -> None:
    bind(agent=worker.runtime.agent_id, slot=worker.slot.index)  # a new thread: a new context
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
    maintenance_redis = sync_client(settings.redis_url or "")
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
