"""Putting jobs on RQ queues, by dotted path (the controller never imports `agents`)."""

from __future__ import annotations

from anyio import to_thread
from redis import Redis
from rq import Callback, Queue

from semantest import keys
from semantest.config import Settings
from semantest.models import JobRecord


def _enqueue(redis: Redis, settings: Settings, record: JobRecord) -> None:
    queue = Queue(keys.queue_name(record.provider, record.priority.value), connection=redis)
    # No RQ `Retry` here: whether a job runs again is decided by `semantest.attempts` from the
    # record, and the attempt tells RQ (see agents/jobs.py).
    queue.enqueue_call(
        func=keys.GENERATE_FUNC,
        args=(record.id,),
        job_id=record.id,  # one id for our record and RQ's job
        timeout=settings.job_timeout_s + keys.RQ_TIMEOUT_MARGIN_S,
        result_ttl=3600,
        failure_ttl=keys.RECORD_TTL_S,
        on_failure=Callback(keys.FAILURE_CALLBACK),
    )


async def enqueue(redis: Redis, settings: Settings, record: JobRecord) -> None:
    """Enqueue the job's execution; RQ's client is synchronous, so it runs off the loop."""
    await to_thread.run_sync(_enqueue, redis, settings, record)
