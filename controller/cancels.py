"""Canceling jobs: a queued job never runs, a running one is stopped by its agent.

The record is the authority: it becomes `canceled` first (a compare-and-set, so a job that has
just finished answers 409 `CONFLICT` instead). Then the job is taken off wherever it waits:
its tenant's fair queue, RQ's queue list or RQ's scheduled registry (a retry). A job that an
agent runs is announced on `semantest:cancels`; the agent stops that attempt, tells the addon
to stop (`job.cancel`) and frees the slot. Agents also notice on their own within a heartbeat,
so a lost announcement only delays the stop. A slot that claims a canceled job skips it.

A canceled batch leader (see controller/submission.py) hands its followers on: the first one
not yet final is queued in its place and the others follow it.
"""

from __future__ import annotations

import contextlib
import time

from anyio import to_thread
from redis import Redis as SyncRedis
from rq.exceptions import NoSuchJobError
from rq.job import Job

from controller.state import AppState
from semantest import keys
from semantest.errors import Conflict, JobNotFound
from semantest.jobstore import TerminalRecord
from semantest.models import JobRecord, JobStatus

#: Take a job id off its tenant's fair queue (keeping the ring and the depth counter right) or
#: off RQ's queue list. KEYS: fair queue, ring, depth, RQ list; ARGV: id, tenant.
#: Returns 1 (fair queue), 2 (RQ list) or 0 (not waiting there).
UNQUEUE_LUA = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then
  redis.call('DECR', KEYS[3])
  if redis.call('LLEN', KEYS[1]) == 0 then redis.call('LREM', KEYS[2], 0, ARGV[2]) end
  return 1
end
if redis.call('LREM', KEYS[4], 1, ARGV[1]) > 0 then return 2 end
return 0
"""

#: Queue one job id at the end of its tenant's fair queue. KEYS: fair queue, ring, depth,
#: doorbell; ARGV: id, tenant.
REQUEUE_LUA = """
if redis.call('RPUSH', KEYS[1], ARGV[1]) == 1 then redis.call('RPUSH', KEYS[2], ARGV[2]) end
redis.call('INCR', KEYS[3])
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, 999)
return 1
"""


async def cancel_job(state: AppState, tenant: str, job_id: str) -> JobRecord:
    """Cancel one of `tenant`'s jobs; `JobNotFound` for another tenant's, `Conflict` if final."""
    record = await state.jobs.get(job_id) if len(job_id) <= 64 else None
    if record is None or record.tenant != tenant:
        raise JobNotFound(f"no job {job_id!r}")
    was = record.status

    def mark(r: JobRecord) -> None:
        r.status, r.finished_at, r.lease = JobStatus.CANCELED, time.time(), None

    try:
        record = await state.jobs.update(job_id, mark)
    except TerminalRecord as final:
        raise Conflict(
            f"job {job_id} is already {final.record.status.value}",
            [{"field": "jobId", "reason": f"status {final.record.status.value}"}],
        ) from None
    provider, lane = record.provider, record.priority.value
    rq_list, depth = keys.waiting(provider, lane)
    fair, ring = keys.fair_queue(provider, lane, tenant), keys.fair_ring(provider, lane)
    await state.redis.eval(UNQUEUE_LUA, 4, fair, ring, depth, rq_list, job_id, tenant)
    if was is JobStatus.RETRYING:
        await to_thread.run_sync(_cancel_in_rq, state.redis_sync, job_id)
    elif was in (JobStatus.LEASED, JobStatus.RUNNING):
        await state.redis.publish(keys.CANCELS, job_id)
    await _promote_follower(state, record)
    return record


async def _promote_follower(state: AppState, leader: JobRecord) -> None:
    """Queue the first follower of a canceled leader that is not final; the rest follow it."""
    raw = await state.redis.smembers(keys.followers(leader.id))
    if not raw:
        return
    ids = sorted(i.decode() if isinstance(i, bytes) else i for i in raw)
    records = [await state.jobs.get(i) for i in ids]
    waiting = [r for r in records if r is not None and not r.status.terminal]
    await state.redis.delete(keys.followers(leader.id))
    if not waiting:
        return
    heir, others = waiting[0], waiting[1:]

    def lead(r: JobRecord) -> None:
        r.same_as = None

    def follow(r: JobRecord) -> None:
        r.same_as = heir.id

    await state.jobs.update(heir.id, lead)
    for other in others:
        await state.jobs.update(other.id, follow)
    if others:
        await state.redis.sadd(keys.followers(heir.id), *(o.id for o in others))
        await state.redis.expire(keys.followers(heir.id), keys.RECORD_TTL_S)
    lane = heir.priority.value
    await state.redis.eval(
        REQUEUE_LUA,
        4,
        keys.fair_queue(heir.provider, lane, heir.tenant),
        keys.fair_ring(heir.provider, lane),
        keys.lane_depth(heir.provider, lane),
        keys.doorbell(heir.provider),
        heir.id,
        heir.tenant,
    )


def _cancel_in_rq(redis: SyncRedis, job_id: str) -> None:
    """RQ's own cancel: off its queue and scheduled registry, into its canceled registry."""
    with contextlib.suppress(NoSuchJobError):
        Job.fetch(job_id, connection=redis).cancel()
