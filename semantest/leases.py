"""The lease reaper: a job whose agent stopped heart-beating is re-queued within seconds.

Every running job is one execution in RQ's started registry, and the RQ worker that runs it is
named `<agent id>/<slot>@<boot>`. An agent renews its heartbeat (`keys.agent(id)`, carrying its
`boot`) every `keys.HEARTBEAT_S`; the key lives `keys.LEASE_TTL_S`. That heartbeat is the lease
of every job the agent runs. `reap()` — run once a second by the controller — finds executions
whose agent's heartbeat is gone or belongs to another boot (the agent was restarted) and ends
them as `AGENT_LOST`:

1. the record, through the retry policy (`semantest.attempts`), fenced on the dead attempt's
   lease: `retrying` (the lease cleared, so a late write of the dead attempt is refused) or
   `failed` once attempts are used up;
2. RQ, to agree: the execution leaves the started registry, and the job is scheduled again
   after the policy's back-off (RQ's scheduler, run by the controller, enqueues it) or marked
   failed in RQ's failed registry.

A job whose agent died before it took its lease is re-queued the same way (no attempt was
counted). A dead agent's job goes to the *front* of its queue at once (no back-off: its agent's
death says nothing about the job), so a backlog does not delay its re-run.

Jobs a dead worker had claimed (taken off a queue, not yet in RQ's started registry; see
`keys.claims`) go back to the front of their queue too, and so do the chat follow-ups waiting
in its private list (`keys.slot_queue`): the slot that takes one finds its chat's tab gone and
fails it at once with `AGENT_LOST` (`agents/chat_tabs.py`), instead of it waiting forever.

Controllers take a Redis lock per pass, so only one reaps at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from semantest import attempts, keys, providers
from semantest.config import Settings
from semantest.fleet import heartbeat_records, text
from semantest.jobstore import JobStore, TerminalRecord
from semantest.models import JobRecord, JobStatus, Priority

log = logging.getLogger(__name__)

LOST_MESSAGE = "the agent running this job stopped heart-beating"

#: Move the jobs of a slot's private list (KEYS[1]; all of them, or only ARGV[3] when given) to
#: the front of their RQ queues (job hash `origin`; ARGV[1] RQ's job key prefix, ARGV[2] its
#: queue key prefix). Returns the ids moved; an id no longer in the list is left alone.
RETURN_SLOT_QUEUE_LUA = """
local ids = ARGV[3] ~= '' and {ARGV[3]} or redis.call('LRANGE', KEYS[1], 0, -1)
local moved = {}
for _, id in ipairs(ids) do
  if redis.call('LREM', KEYS[1], 1, id) == 1 then
    local origin = redis.call('HGET', ARGV[1] .. id, 'origin')
    if origin then
      redis.call('LPUSH', ARGV[2] .. origin, id)
      moved[#moved + 1] = id
    end
  end
end
return moved
"""


def return_slot_queue(redis: SyncRedis, worker: str, job_id: str | None = None) -> list[str]:
    """Put the jobs waiting for `worker` alone (a gone slot's chat follow-ups) back at the
    front of their RQ queues; only `job_id` when given. The ids moved."""
    moved = redis.eval(
        RETURN_SLOT_QUEUE_LUA,
        1,
        keys.slot_queue(worker),
        Job.redis_job_namespace_prefix,
        Queue.redis_queue_namespace_prefix,
        job_id or "",
    )
    return [text(m) for m in moved]


@dataclass(frozen=True)
class Reaped:
    """One execution the reaper ended."""

    job_id: str
    worker: str
    #: `retrying`, `failed`, or the record's final status when it was already final.
    status: str


def agent_of(worker_name: str) -> tuple[str, str] | None:
    """`(agent id, boot)` of an RQ worker name `<agent>/<slot>@<boot>`, or None for others."""
    head, sep, boot = worker_name.rpartition("@")
    agent, slash, _slot = head.rpartition("/")
    if not (sep and slash and agent and boot):
        return None
    return agent, boot


async def live_boots(redis: Redis) -> dict[str, str]:
    """Agent id → boot of every agent whose heartbeat has not expired.

    Only `boot` is read, so an agent of another version still holds its leases.
    """
    live = {}
    for agent_id, raw in (await heartbeat_records(redis)).items():
        try:
            live[agent_id] = str(json.loads(raw)["boot"])
        except (ValueError, KeyError, TypeError):
            continue
    return live


class Reaper:
    """Re-queue the jobs of dead agents; one instance per controller process."""

    def __init__(self, redis: Redis, redis_sync: SyncRedis, settings: Settings) -> None:
        self.redis = redis
        self.redis_sync = redis_sync
        self.settings = settings
        self.jobs = JobStore(redis)
        self._token = secrets.token_hex(8)

    @property
    def queue_names(self) -> list[str]:
        """Every provider's lanes (the providers known now: a publish can add one)."""
        return [keys.queue_name(p, lane.value) for p in providers.names() for lane in Priority]

    async def reap(self) -> list[Reaped]:
        """One pass over every provider queue's started registry."""
        lock = await self.redis.set(keys.REAPER_LOCK, self._token, nx=True, px=5000)
        if not lock and await self.redis.get(keys.REAPER_LOCK) != self._token.encode():
            return []  # another controller is reaping
        live = await live_boots(self.redis)
        reaped: list[Reaped] = []
        for name in self.queue_names:
            started = await asyncio.to_thread(self._started, name)
            for job_id, execution_id, worker in started:
                owner = agent_of(worker)
                if owner is not None and live.get(owner[0]) == owner[1]:
                    continue  # its agent is alive: the lease holds
                reaped.append(await self._end(name, job_id, execution_id, worker))
        for member in await self.redis.smembers(keys.CLAIMERS):
            claimer = text(member)
            owner = agent_of(claimer)
            if owner is None or live.get(owner[0]) != owner[1]:
                await asyncio.to_thread(return_slot_queue, self.redis_sync, claimer)
                await asyncio.to_thread(self._return_claims, claimer)
        await self.redis.pexpire(keys.REAPER_LOCK, 2000)
        return reaped

    def _return_claims(self, worker: str) -> None:
        """Put a dead worker's claimed jobs back at the front of their queues."""
        claim_key = keys.claims(worker)
        for raw in self.redis_sync.lrange(claim_key, 0, -1):
            job_id = text(raw)
            try:
                job = Job.fetch(job_id, connection=self.redis_sync)
            except NoSuchJobError:
                continue
            queue = Queue(job.origin, connection=self.redis_sync)
            started = StartedJobRegistry(job.origin, connection=self.redis_sync)
            already = (
                job.get_status() is not RQStatus.QUEUED
                or job_id in started  # the started-registry pass handles it
                or self.redis_sync.lpos(queue.key, job_id) is not None
            )
            if not already:
                queue.push_job_id(job.id, at_front=True)
                log.warning(
                    "job %s: %s died holding it; back at the front of %s",
                    job_id,
                    worker,
                    queue.name,
                )
        self.redis_sync.delete(claim_key)
        self.redis_sync.srem(keys.CLAIMERS, worker)

    def _started(self, queue_name: str) -> list[tuple[str, str, str]]:
        """(job id, execution id, worker name) of each execution in RQ's started registry."""
        registry = StartedJobRegistry(queue_name, connection=self.redis_sync)
        found = []
        for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
            try:
                worker = Execution.fetch(execution_id, job_id, self.redis_sync).worker_name
            except ValueError:  # the execution's hash expired: nobody is running it
                worker = ""
            found.append((job_id, execution_id, worker))
        return found

    async def _end(self, queue_name: str, job_id: str, execution_id: str, worker: str) -> Reaped:
        decided: list[attempts.Decision] = []

        def lost(r: JobRecord) -> None:
            if r.lease is not None and not r.lease.startswith(f"{worker}#"):
                return  # another, live attempt holds it: only RQ's stale entry goes
            decision = attempts.decide(r, True, self.settings, at_once=True)
            attempts.record_failure(r, "AGENT_LOST", LOST_MESSAGE, decision)
            decided.append(decision)

        status: str
        try:
            record = await self.jobs.update(job_id, lost)
            status = record.status.value
        except TerminalRecord as done:
            status = done.record.status.value
        except KeyError:  # the record expired: nothing will run it
            status = JobStatus.FAILED.value
        decision = decided[0] if decided else None
        if decision is not None:
            action = "retry" if decision.retry else "fail"
        elif status == JobStatus.SUCCEEDED.value:
            action = "finish"
        elif status in (JobStatus.FAILED.value, JobStatus.CANCELED.value):
            action = "fail"
        else:
            action = "drop"  # a live attempt holds the record; only RQ's stale entry goes
        await asyncio.to_thread(self._settle_rq, queue_name, job_id, execution_id, action)
        log.warning(
            "job %s: agent of %s lost; %s",
            job_id,
            worker or "an expired execution",
            "back at the front of its queue" if action == "retry" else status,
        )
        return Reaped(job_id, worker, status)

    def _settle_rq(self, queue_name: str, job_id: str, execution_id: str, action: str) -> None:
        """Make RQ agree with the record: `retry` (front of the queue), `fail`, `finish`, `drop`."""
        queue = Queue(queue_name, connection=self.redis_sync)
        registry = StartedJobRegistry(queue_name, connection=self.redis_sync)
        try:
            job = Job.fetch(job_id, connection=self.redis_sync)
        except NoSuchJobError:
            self.redis_sync.zrem(registry.key, f"{job_id}:{execution_id}")
            return
        with self.redis_sync.pipeline() as pipe:
            pipe.zrem(registry.key, f"{job_id}:{execution_id}")
            if action == "retry":  # `decide(at_once=True)`: no back-off for a dead agent
                job.set_status(RQStatus.QUEUED, pipeline=pipe)
                queue.push_job_id(job.id, pipeline=pipe, at_front=True)
            elif action == "finish":
                job.set_status(RQStatus.FINISHED, pipeline=pipe)
            elif action == "fail":
                job.set_status(RQStatus.FAILED, pipeline=pipe)
                failed = FailedJobRegistry(queue_name, connection=self.redis_sync)
                reason = f"AGENT_LOST: {LOST_MESSAGE}"
                failed.add(job, ttl=job.failure_ttl, exc_string=reason, pipeline=pipe)
            pipe.execute()
