"""Job records in Redis: create, read, and change them atomically with their event stream.

Both the controller and the agents go through `JobStore`, so the rules about records live in
one place: every change is a compare-and-set (WATCH/MULTI) that also appends an event, and a
record in a terminal status is never changed again — which is what makes "executed at least
once, recorded exactly once" hold when two attempts of the same job race.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from semantest import keys
from semantest.metrics import observe_final
from semantest.models import JobEvent, JobRecord, JobStatus
from semantest.webhook_events import announce_final


class TerminalRecord(Exception):
    """The record is already final; the change was not applied."""

    def __init__(self, record: JobRecord) -> None:
        super().__init__(f"job {record.id} is already {record.status.value}")
        self.record = record


class StaleLease(Exception):
    """The writer's lease is no longer the record's: another attempt (or the reaper) took over."""

    def __init__(self, record: JobRecord, lease: str) -> None:
        super().__init__(f"job {record.id}: lease {lease} is stale (now {record.lease})")
        self.record = record


class JobStore:
    """Typed access to job records; one instance per Redis client."""

    def __init__(self, redis: Redis, cache_ttl_s: int = 24 * 3600) -> None:
        self.redis = redis
        #: How long a result stays in the result cache (`options.cache`).
        self.cache_ttl_s = cache_ttl_s

    async def create(self, record: JobRecord) -> None:
        """Store a new record and its first event."""
        event = _event(record)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.job(record.id), record.to_json(), ex=keys.RECORD_TTL_S, nx=True)
            pipe.xadd(keys.job_events(record.id), event, maxlen=keys.EVENTS_MAXLEN)
            pipe.expire(keys.job_events(record.id), keys.RECORD_TTL_S)
            await pipe.execute()

    async def get(self, job_id: str) -> JobRecord | None:
        """The record, or None when there is no such job."""
        raw = await self.redis.get(keys.job(job_id))
        return None if raw is None else JobRecord.from_json(raw)

    async def update(
        self,
        job_id: str,
        change: Callable[[JobRecord], None],
        *,
        allow_terminal: bool = False,
        lease: str | None = None,
    ) -> JobRecord:
        """Apply `change` to the current record atomically and append an event.

        Raises `KeyError` for an unknown job and `TerminalRecord` when the record is already
        final (unless `allow_terminal`), so a late or duplicate attempt can never overwrite a
        recorded result. With `lease`, the write is fenced: it applies only while the record's
        lease is that token, else `StaleLease` (checked inside the same WATCH/MULTI).
        """
        key = keys.job(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise KeyError(job_id)
                    record = JobRecord.from_json(raw)
                    if record.status.terminal and not allow_terminal:
                        raise TerminalRecord(record)
                    if lease is not None and record.lease != lease:
                        raise StaleLease(record, lease)
                    change(record)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, record.to_json(), ex=keys.RECORD_TTL_S)
                    pipe.xadd(keys.job_events(job_id), _event(record), maxlen=keys.EVENTS_MAXLEN)
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        if record.status.terminal:
            await self._finished(record)
        return record

    async def _finished(self, record: JobRecord) -> None:
        """A job just became final: its followers take the result, the cache keeps it.

        Followers are identical requests of the same batch that did not run (see
        controller/submission.py); a follower already final (canceled) keeps its own status.
        Its webhook events are emitted here too, once per job and status.
        """
        observe_final(record)
        await announce_final(self.redis, record)
        if record.status is JobStatus.SUCCEEDED and record.options.cache and not record.cached:
            images = [i.model_dump(mode="json", by_alias=True) for i in record.images]
            await self.redis.set(
                keys.result_cache(record.tenant, record.result_fingerprint()),
                json.dumps(images),
                ex=self.cache_ttl_s,
            )
        followers = await self.redis.smembers(keys.followers(record.id))
        if record.status is JobStatus.CANCELED or not followers:
            return  # a canceled leader hands its followers on (see `Submitter.promote`)

        def take(r: JobRecord) -> None:
            r.status, r.progress, r.stage = record.status, record.progress, record.stage
            r.images, r.error = record.images, record.error
            r.started_at, r.finished_at = record.started_at, record.finished_at
            r.agent = record.agent

        for follower in followers:
            with contextlib.suppress(KeyError, TerminalRecord):
                await self.update(
                    follower.decode() if isinstance(follower, bytes) else follower, take
                )
        await self.redis.delete(keys.followers(record.id))

    async def events(self, job_id: str) -> list[JobEvent]:
        """The job's events, oldest first."""
        entries = await self.redis.xrange(keys.job_events(job_id)) or []
        return [JobEvent.model_validate_json(fields[b"event"]) for _id, fields in entries if fields]


def _event(record: JobRecord) -> dict[Any, Any]:
    event = JobEvent(
        job_id=record.id,
        status=record.status,
        progress=record.progress,
        stage=record.stage,
        detail={
            **({"error": record.error.code} if record.error else {}),
            **({"agent": record.agent, "attempt": record.attempts} if record.agent else {}),
        },
    )
    return {"event": event.model_dump_json(by_alias=True)}
