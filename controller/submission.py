"""Submitting jobs: records, RQ jobs, fair queues and idempotency in one atomic script.

A submission (one prompt, a batch of 100, a chat message) is one round trip to Redis: a Lua
script that first checks everything that can refuse it — an `Idempotency-Key` seen before, an
id that already exists, a lane at capacity — and then writes, for every job, the record, its
first event, RQ's job hash and the entry in its tenant's fair queue. A crash can therefore leave
neither a record without a job nor a job without a record, and a duplicate id is refused, never
overwritten.

New jobs do not go on RQ's queue list: they wait in per-tenant lists that slots drain
round-robin when they claim (see `agents/worker.py`), which is how a tenant with 10,000 queued
jobs does not starve one with 10. RQ still owns everything after the claim (started registry,
retries, failure callbacks).

Inside a batch, identical requests (same provider, prompt, options) run once: the first is the
leader, the others follow it and take its result when it ends (`JobStore` copies it). With
`options.cache`, a request the tenant made before is answered from the result cache at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header, Request
from redis.asyncio import Redis
from rq import Callback
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import resolve_serializer
from rq.utils import now, utcformat

from controller.state import AppState
from semantest import keys, routing, tracing
from semantest.config import Settings
from semantest.errors import Conflict, Unavailable
from semantest.metrics import observe_final
from semantest.models import ImageRecord, JobEvent, JobRecord, JobStatus, Stage
from semantest.webhook_events import announce_final

log = logging.getLogger(__name__)

#: KEYS[1] idempotency key, KEYS[2] batch key, KEYS[3] tenant's job index, then 8 keys per job:
#: record, events, RQ job hash, target list, fair ring, lane depth, leader's followers, doorbell.
#: ARGV[1..10]: has idempotency key, request fingerprint, idempotency TTL, answer JSON, batch
#: JSON, record TTL, lane capacity, job count, events max length, oldest score the tenant's index
#: keeps (older records have expired); then 8 per job: id, record JSON,
#: event JSON, mode (fair|slot|follow|done), tenant, score (creation time), RQ fields JSON,
#: RQ data.
#: Returns {"ok"} | {"replay", answer} | {"conflict"} | {"duplicate", id} | {"full", lane, depth}.
SUBMIT_LUA = """
local nj = tonumber(ARGV[8])
if ARGV[1] == '1' then
  local prev = redis.call('GET', KEYS[1])
  if prev then
    local doc = cjson.decode(prev)
    if doc.fingerprint == ARGV[2] then return {'replay', doc.answer} end
    return {'conflict'}
  end
end
if ARGV[5] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then return {'duplicate', 'batch'} end
local adding = {}
for j = 0, nj - 1 do
  local k, a = 4 + j * 8, 11 + j * 8
  if redis.call('EXISTS', KEYS[k]) == 1 or redis.call('EXISTS', KEYS[k + 2]) == 1 then
    return {'duplicate', ARGV[a]}
  end
  if ARGV[a + 3] == 'fair' then adding[KEYS[k + 5]] = (adding[KEYS[k + 5]] or 0) + 1 end
end
for lane, n in pairs(adding) do
  local depth = tonumber(redis.call('GET', lane) or '0')
  if depth + n > tonumber(ARGV[7]) then return {'full', lane, tostring(depth)} end
end
local ttl = ARGV[6]
if ARGV[5] ~= '' then redis.call('SET', KEYS[2], ARGV[5], 'EX', ttl) end
for j = 0, nj - 1 do
  local k, a = 4 + j * 8, 11 + j * 8
  local id, mode = ARGV[a], ARGV[a + 3]
  redis.call('SET', KEYS[k], ARGV[a + 1], 'EX', ttl)
  redis.call('XADD', KEYS[k + 1], 'MAXLEN', '~', ARGV[9], '*', 'event', ARGV[a + 2])
  redis.call('EXPIRE', KEYS[k + 1], ttl)
  redis.call('ZADD', KEYS[3], ARGV[a + 5], id)
  if mode ~= 'done' then
    local fields = {}
    for name, value in pairs(cjson.decode(ARGV[a + 6])) do
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
    fields[#fields + 1] = 'data'
    fields[#fields + 1] = ARGV[a + 7]
    redis.call('HSET', KEYS[k + 2], unpack(fields))
  end
  if mode == 'fair' then
    if redis.call('RPUSH', KEYS[k + 3], id) == 1 then
      redis.call('RPUSH', KEYS[k + 4], ARGV[a + 4])
    end
    redis.call('INCR', KEYS[k + 5])
  elseif mode == 'slot' then
    redis.call('RPUSH', KEYS[k + 3], id)
  elseif mode == 'follow' then
    redis.call('SADD', KEYS[k + 6], id)
    redis.call('EXPIRE', KEYS[k + 6], ttl)
  end
  if mode == 'fair' or mode == 'slot' then
    redis.call('LPUSH', KEYS[k + 7], '1')
    redis.call('LTRIM', KEYS[k + 7], 0, 999)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[10])
redis.call('EXPIRE', KEYS[3], ttl)
if ARGV[1] == '1' then
  redis.call('SET', KEYS[1], cjson.encode({fingerprint = ARGV[2], answer = ARGV[4]}), 'EX', ARGV[3])
end
return {'ok'}
"""


@dataclass(frozen=True)
class Idempotency:
    """A request's `Idempotency-Key` and what the request asked (its route and body)."""

    key: str
    fingerprint: str

    @classmethod
    async def from_request(cls, request: Request, key: str | None) -> Idempotency | None:
        """None without a key; the fingerprint covers the route and the exact body."""
        if key is None:
            return None
        route = f"{request.method} {request.url.path}".encode()
        digest = hashlib.sha256(route + b"\0" + await request.body()).hexdigest()
        return cls(key=key, fingerprint=digest)


#: The `Idempotency-Key` header of submissions: any printable string up to 255 characters.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeating a request with the same key and body returns the first answer "
        "(kept 24 h); the same key with another body is 409 `CONFLICT`.",
    ),
]


def status_url(state: AppState, job_id: str) -> str:
    """Where a client polls one job."""
    return f"{state.settings.controller_url}/api/v1/images/status/{job_id}"


@dataclass(frozen=True)
class Replay:
    """The answer a request with the same `Idempotency-Key` and body got the first time."""

    answer: dict[str, Any]


class Submitter:
    """Builds and runs the submission script; one per controller process."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._script = redis.register_script(SUBMIT_LUA)
        #: RQ job hash fields per lane, see `_rq_job`.
        self._templates: dict[str, dict[str, Any]] = {}
        self._serializer = resolve_serializer(None)

    async def _route(self, records: list[JobRecord]) -> None:
        """Jobs that name several providers (`auto` or a list) go to the first healthy one
        with capacity (`semantest.routing`); the rest keep theirs."""
        if not any(r.providers for r in records):
            return
        bad, room = await routing.degraded(self.redis), await routing.capacity(self.redis)
        for record in records:
            if record.providers:
                record.provider = routing.pick(record.providers, bad, room)

    async def submit(
        self,
        records: list[JobRecord],
        answer: dict[str, Any],
        *,
        idempotency: Idempotency | None = None,
        batch: dict[str, Any] | None = None,
        slot_worker: str | None = None,
        tenant: str,
    ) -> Replay | None:
        """Store and queue `records` atomically; `answer` is what the caller is told (202).

        Returns a `Replay` when the idempotency key was seen with the same request. Raises
        `Conflict` for the key with another request or a duplicate id, `Unavailable` when a
        lane is full. `slot_worker` queues every job for that slot only (chat follow-ups).
        """
        await self._route(records)
        await self._fill_from_cache(records)
        leaders: dict[str, str] = {}
        key_list: list[str] = [
            keys.idempotency(tenant, _hash(idempotency.key)) if idempotency else keys.PREFIX,
            keys.batch(batch["id"]) if batch else keys.PREFIX,
            keys.tenant_jobs(tenant),
        ]
        args: list[Any] = [
            "1" if idempotency else "0",
            idempotency.fingerprint if idempotency else "",
            self.settings.idempotency_ttl_s,
            json.dumps(answer),
            json.dumps(batch) if batch else "",
            keys.RECORD_TTL_S,
            self.settings.lane_capacity,
            len(records),
            keys.EVENTS_MAXLEN,
            time.time() - keys.RECORD_TTL_S,
        ]
        last_score = 0.0
        for record in records:
            # the tenant's job index orders by creation; one submission's jobs in their order
            score = last_score = max(record.created_at, last_score + 1e-6)
            lane = record.priority.value
            mode, target, leader = "fair", keys.fair_queue(record.provider, lane, tenant), ""
            if record.status.terminal:
                mode = "done"
            elif slot_worker is not None:
                mode, target = "slot", keys.slot_queue(slot_worker)
            elif batch is not None:
                fingerprint = record.result_fingerprint()
                if fingerprint in leaders:
                    mode, leader = "follow", leaders[fingerprint]
                    record.same_as = leader
                else:
                    leaders[fingerprint] = record.id
            fields, data = self._rq_job(record) if mode != "done" else ({}, b"")
            key_list += [
                keys.job(record.id),
                keys.job_events(record.id),
                Job.key_for(record.id),
                target,
                keys.fair_ring(record.provider, lane),
                keys.lane_depth(record.provider, lane),
                keys.followers(leader or record.id),
                keys.slot_doorbell(slot_worker) if slot_worker else keys.doorbell(record.provider),
            ]
            args += [
                record.id,
                record.to_json(),
                _event(record),
                mode,
                tenant,
                repr(score),
                json.dumps(fields),
                data,
            ]
        with tracing.span("semantest.submit", attributes={"jobs": len(records)}):
            reply = await self._script(keys=key_list, args=args)
            verdict = reply[0].decode()
            if verdict == "ok" and tracing.enabled():  # the agents' spans continue this trace
                await self._keep_trace(records, tracing.traceparent())
        if verdict == "ok":
            for record in records:
                if record.status.terminal:  # final at once: its webhook events go out now
                    observe_final(record)
                    await announce_final(self.redis, record)
            if len(records) == 1:
                log.info("job %s accepted", records[0].id, extra={"job_id": records[0].id})
            else:
                log.info("%d jobs accepted: %s", len(records), " ".join(r.id for r in records))
            return None
        if verdict == "replay":
            return Replay(json.loads(reply[1]))
        if verdict == "conflict":
            raise Conflict(
                "this Idempotency-Key was used with another request",
                [{"field": "Idempotency-Key", "reason": "reused with a different body or route"}],
            )
        if verdict == "duplicate":
            raise Conflict(f"id {reply[1].decode()!r} already exists")
        lane_name = reply[1].decode().rsplit(":", 1)[-1]
        raise Unavailable(
            f"the {lane_name} lane is full ({int(reply[2])} jobs waiting, capacity "
            f"{self.settings.lane_capacity}); retry later",
            retry_after_s=5,
            details=[{"field": "priority", "reason": f"lane {lane_name} at capacity"}],
        )

    async def _keep_trace(self, records: list[JobRecord], traceparent: str | None) -> None:
        """Store the submit span's context for the agents (only while tracing is on)."""
        if traceparent is None:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.set(keys.job_trace(record.id), traceparent, ex=keys.RECORD_TTL_S)
            await pipe.execute()

    def _rq_job(self, record: JobRecord) -> tuple[dict[str, Any], bytes]:
        """RQ's job hash for `record` (what `Queue.enqueue` would write), minus `data`.

        Building an RQ `Job` costs ~250 µs; every job of a lane differs only in its id (in
        `data` and `description`) and timestamps, so the rest comes from a template built
        once per lane by RQ itself (a unit test compares the two).
        """
        name = keys.queue_name(record.provider, record.priority.value)
        template = self._templates.get(name)
        if template is None:
            template = self._templates[name] = self.rq_job_fields(name, _TEMPLATE_ID)[0]
        stamp = utcformat(now())
        fields = {
            **template,
            "created_at": stamp,
            "enqueued_at": stamp,
            "description": template["description"].replace(_TEMPLATE_ID, record.id),
        }
        job_tuple: tuple[str, None, tuple[str], dict[str, Any]] = (
            keys.GENERATE_FUNC,
            None,
            (record.id,),
            {},
        )
        return fields, zlib.compress(self._serializer.dumps(job_tuple), 1)

    def rq_job_fields(self, queue_name: str, job_id: str) -> tuple[dict[str, Any], bytes]:
        """What RQ itself would store for one of our jobs: its hash fields, and `data`."""
        job = Job.create(
            keys.GENERATE_FUNC,
            args=(job_id,),
            id=job_id,  # one id for our record and RQ's job
            connection=_NO_CONNECTION,
            timeout=self.settings.job_timeout_s + keys.RQ_TIMEOUT_MARGIN_S,
            result_ttl=3600,
            failure_ttl=keys.RECORD_TTL_S,
            on_failure=Callback(keys.FAILURE_CALLBACK),
            origin=queue_name,
            status=RQStatus.QUEUED,
        )
        # No RQ `Retry`: whether a job runs again is decided by `semantest.attempts` from the
        # record, and the attempt tells RQ (see agents/jobs.py).
        job.enqueued_at = now()
        fields = job.to_dict()
        data = fields.pop("data")
        return {k: v for k, v in fields.items() if v != ""}, data

    async def _fill_from_cache(self, records: list[JobRecord]) -> None:
        """Answer `options.cache` requests from the tenant's result cache when it has them."""
        wanted = [r for r in records if r.options.cache]
        if not wanted:
            return
        cache_keys = [keys.result_cache(r.tenant, r.result_fingerprint()) for r in wanted]
        for record, raw in zip(wanted, await self.redis.mget(cache_keys), strict=True):
            if raw is None:
                continue
            images = [ImageRecord.model_validate(i) for i in json.loads(raw)]
            record.status, record.stage, record.progress = JobStatus.SUCCEEDED, Stage.DONE, 100
            record.images, record.cached = images, True
            record.started_at = record.finished_at = time.time()


#: Stands for a job id in the per-lane template of RQ's job hash.
_TEMPLATE_ID = "00000000000000000000000000000000"


class _NoConnection:
    """RQ objects need a connection even to build a job hash; this one refuses to be used."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the submitter's RQ objects do not talk to Redis ({name})")


_NO_CONNECTION: Any = _NoConnection()


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _event(record: JobRecord) -> str:
    event = JobEvent(
        job_id=record.id,
        status=record.status,
        progress=record.progress,
        stage=record.stage,
        detail={"cached": True} if record.cached else {},
    )
    return event.model_dump_json(by_alias=True)
