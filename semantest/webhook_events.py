"""Webhook events: emitted once when a job or batch ends, queued for the webhook worker, and
every delivery attempt logged for the tenant.

`announce_final(redis, record)` is called where a job becomes final (`JobStore._finished`,
and the submission of a job that is final at once: a result-cache hit, a chat follow-up whose
slot is gone). It emits `job.<status>` with the id `evt_<jobId>_<status>` and, when that job
was the last of its batch to end, `batch.completed` with `evt_<batchId>_completed`. One Lua
script writes the event with `SET NX` and queues its RQ job in the same step: a second final
write of the same job (a re-run after a crash, a duplicate, a late attempt) finds the event
and queues nothing, so a receiver sees one id per event however often it is delivered.

The target is the job's webhook, else its batch's, else the tenant's default URL; with none,
nothing is emitted. Which secret signs it is read at delivery (a rotation applies to retries).
"""

from __future__ import annotations

import json
import logging
import time
from enum import Enum
from typing import Annotated, Any

from pydantic import Field
from redis.asyncio import Redis
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.utils import now

from semantest import keys
from semantest.config import Settings
from semantest.models import (
    BatchStatus,
    BatchSummary,
    CamelModel,
    JobRecord,
    JobStatus,
    WebhookTarget,
)
from semantest.tenants import ADMIN_TENANT, TenantStore

log = logging.getLogger(__name__)

#: RQ's timeout for one delivery attempt: a backstop beyond `webhook_timeout_s` (at most 120 s),
#: which the attempt enforces itself.
RQ_TIMEOUT_S = 180


class EventType(str, Enum):
    """What happened."""

    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELED = "job.canceled"
    BATCH_COMPLETED = "batch.completed"
    #: To the admin tenant: a provider's canaries failed (`semantest.canaries`) ...
    PROVIDER_DEGRADED = "provider.degraded"
    #: ... and passed again.
    PROVIDER_RECOVERED = "provider.recovered"


class WebhookEvent(CamelModel):
    """One event as stored at `keys.webhook_event(id)` until its deliveries are over."""

    id: str
    type: EventType
    tenant: str
    url: str
    job_id: str | None = None
    batch_id: str | None = None
    occurred_at: float = Field(default_factory=time.time)
    #: The job's final record, or the batch's summary (image URLs are filled at delivery).
    data: dict[str, Any]


class Outcome(str, Enum):
    """How a delivery attempt ended."""

    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"


class DeliveryAttempt(CamelModel):
    """One attempt to deliver one event, as `GET /api/v1/webhooks/deliveries` lists it."""

    #: The event's id, sent as `webhook-id` (the same on every attempt).
    id: str
    type: EventType
    job_id: str | None = None
    batch_id: str | None = None
    #: The target; `finalUrl` is the one that answered when it redirected.
    url: str
    final_url: str | None = None
    attempt: Annotated[int, Field(ge=1)]
    outcome: Outcome
    status_code: int | None = None
    error: str | None = None
    duration_ms: int
    at: float
    #: When the next attempt is due (unix seconds), while retrying.
    next_attempt_at: float | None = None


class DeliveryPage(CamelModel):
    """Delivery attempts, newest first."""

    deliveries: list[DeliveryAttempt]


#: KEYS[1] event, KEYS[2] RQ job hash, KEYS[3] RQ queue list, KEYS[4] RQ's set of queues.
#: ARGV[1] event JSON, ARGV[2] its TTL, ARGV[3] RQ job id, ARGV[4..] RQ hash fields, values.
#: Returns 1 when queued, 0 when the event existed (emitted before: nothing is done).
EMIT_LUA = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], KEYS[3])
return 1
"""
#: KEYS[1] the batch's set of final jobs; ARGV[1] job id, ARGV[2] TTL. Returns how many ended.
COUNT_FINAL_LUA = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('SCARD', KEYS[1])
"""


async def announce_final(redis: Redis, record: JobRecord) -> None:
    """Emit the events a job's end causes. Never raises: the record is final either way, so a
    failure here is logged (with the job id) instead of failing the write that ended the job."""
    try:
        await _announce(redis, record)
    except Exception:
        log.exception("job %s: could not emit its webhook events", record.id)


async def _announce(redis: Redis, record: JobRecord) -> None:
    batch = None
    if record.batch_id is not None:
        raw = await redis.get(keys.batch(record.batch_id))
        batch = json.loads(raw) if raw else None
    batch_target = _target(batch.get("webhook")) if batch else None
    url = await _target_url(redis, record.tenant, record.webhook or batch_target)
    if url is not None:
        event = WebhookEvent(
            id=f"evt_{record.id}_{record.status.value}",
            type=EventType(f"job.{record.status.value}"),
            tenant=record.tenant,
            url=url,
            job_id=record.id,
            batch_id=record.batch_id,
            data=record.model_dump(mode="json", by_alias=True),
        )
        await emit(redis, event)
    if batch is not None:
        await _count_towards_batch(redis, record, batch, batch_target)


async def announce_provider(redis: Redis, provider: str, change: str, data: dict[str, Any]) -> None:
    """Tell the admin tenant's webhook that `provider` is `degraded` or `recovered` (its
    default URL; nothing without one). Never raises: the health is recorded either way."""
    try:
        url = await _target_url(redis, ADMIN_TENANT, None)
        if url is None:
            return
        at = int(float(data.get("at") or time.time()) * 1000)
        event = WebhookEvent(
            id=f"evt_provider_{provider}_{change}_{at}",
            type=EventType(f"provider.{change}"),
            tenant=ADMIN_TENANT,
            url=url,
            data=data,
        )
        await emit(redis, event)
    except Exception:
        log.exception("provider %s %s: could not emit its webhook event", provider, change)


async def _count_towards_batch(
    redis: Redis, record: JobRecord, batch: dict[str, Any], target: WebhookTarget | None
) -> None:
    """`batch.completed` once, by whichever job's end makes the count of ended jobs whole."""
    ids = [str(i) for i in batch["jobIds"]]
    ended = await redis.eval(
        COUNT_FINAL_LUA,
        1,
        keys.webhook_batch_ended(record.batch_id or ""),
        record.id,
        keys.RECORD_TTL_S,
    )
    if int(ended) < len(ids):
        return
    url = await _target_url(redis, record.tenant, target)
    if url is None:
        return
    raw = await redis.mget([keys.job(i) for i in ids])
    records = [JobRecord.from_json(r) for r in raw if r is not None]
    counts = {s.value: 0 for s in JobStatus}
    for r in records:
        counts[r.status.value] += 1
    summary = BatchSummary(
        batch_id=str(batch["id"]),
        status=BatchStatus.COMPLETED,
        total=len(ids),
        counts=counts,
        progress=100,
        done=True,
        created_at=float(batch["createdAt"]),
        jobs=records,
    )
    event = WebhookEvent(
        id=f"evt_{summary.batch_id}_completed",
        type=EventType.BATCH_COMPLETED,
        tenant=record.tenant,
        url=url,
        batch_id=summary.batch_id,
        data=summary.model_dump(mode="json", by_alias=True),
    )
    await emit(redis, event)


def _target(raw: Any) -> WebhookTarget | None:
    return None if raw is None else WebhookTarget.model_validate(raw)


async def _target_url(redis: Redis, tenant: str, target: WebhookTarget | None) -> str | None:
    if target is not None:
        return target.url
    found = await TenantStore(redis).get(tenant)
    return None if found is None else found.webhook_url


async def emit(redis: Redis, event: WebhookEvent) -> bool:
    """Store `event` and queue its delivery, unless it was emitted before (False then)."""
    job = Job.create(
        keys.WEBHOOK_DELIVER_FUNC,
        args=(event.id,),
        id=event.id,
        connection=_NO_CONNECTION,
        timeout=RQ_TIMEOUT_S,
        result_ttl=3600,
        failure_ttl=keys.RECORD_TTL_S,
        origin=keys.WEBHOOK_QUEUE,
        status=RQStatus.QUEUED,
    )
    job.enqueued_at = now()
    fields = [v for pair in job.to_dict().items() if pair[1] != "" for v in pair]
    queued = await redis.eval(
        EMIT_LUA,
        4,
        keys.webhook_event(event.id),
        job.key,
        keys.rq_queue_key(keys.WEBHOOK_QUEUE),
        "rq:queues",
        event.model_dump_json(by_alias=True),
        keys.RECORD_TTL_S,
        event.id,
        *fields,
    )
    return bool(queued)


async def tenant_secret(redis: Redis, tenant: str, settings: Settings) -> str | None:
    """The secret that signs `tenant`'s webhooks: its tenant record's (rotated through the admin
    API); for the admin tenant without a record, `SEMANTEST_WEBHOOK_SECRET`."""
    found = await TenantStore(redis).get(tenant)
    if found is not None:
        return found.webhook_secret
    if tenant == ADMIN_TENANT and settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value()
    return None


async def log_attempt(redis: Redis, tenant: str, attempt: DeliveryAttempt) -> None:
    """Append an attempt to the tenant's deliveries log (newest first, capped, kept 7 days)."""
    key = keys.webhook_deliveries(tenant)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(key, attempt.model_dump_json(by_alias=True))
        pipe.ltrim(key, 0, keys.WEBHOOK_DELIVERIES_MAXLEN - 1)
        pipe.expire(key, keys.RECORD_TTL_S)
        await pipe.execute()


async def deliveries(
    redis: Redis,
    tenant: str,
    *,
    job_id: str | None = None,
    batch_id: str | None = None,
    limit: int = 50,
) -> list[DeliveryAttempt]:
    """The tenant's latest attempts, newest first, for one job or batch when given."""
    found = []
    for raw in await redis.lrange(keys.webhook_deliveries(tenant), 0, -1):
        attempt = DeliveryAttempt.model_validate_json(raw)
        if (job_id is None or attempt.job_id == job_id) and (
            batch_id is None or attempt.batch_id == batch_id
        ):
            found.append(attempt)
            if len(found) == limit:
                break
    return found


class _NoConnection:
    """RQ builds a job hash only with a connection; this one refuses to be used (we write the
    hash ourselves, in the same script as the event)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the emitter's RQ job does not talk to Redis ({name})")


_NO_CONNECTION: Any = _NoConnection()
