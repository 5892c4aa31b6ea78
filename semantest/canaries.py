"""Canaries: a small job per provider on a schedule, so a broken provider is found by itself.

Every `SEMANTEST_CANARY_INTERVAL_S` (the first one interval after the controller starts) the
controller (one at a time, by a Redis lock) submits one canary job, in the high lane and under
its own tenant `canary` (so no customer's job list, webhooks or metrics count it), to each
provider that has a live agent slot for it, and judges the one before when it has ended:

- `SEMANTEST_CANARY_FAILURES` failed canaries in a row mark the provider `degraded`
  (`semantest:provider:<name>:health`): `/api/v1/health` and `/api/v1/fleet` show it, the
  submission stops routing `auto` and list jobs to it (`semantest.routing`), and the admin
  tenant's webhook gets `provider.degraded`;
- the next canary that succeeds marks it `ok` again and sends `provider.recovered`.

A canary that has not ended after two intervals and the attempts' deadlines counts as failed.
A job that names one provider still goes to it while it is degraded: the caller asked for it.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field
from redis.asyncio import Redis

from semantest import keys, providers, routing, webhook_events
from semantest.config import Settings
from semantest.jobstore import JobStore
from semantest.models import EPOCH, CamelModel, JobRecord, JobStatus, Priority

log = logging.getLogger(__name__)

#: The tenant canary jobs run under (no keys: nobody else reads or is told about them).
CANARY_TENANT = "canary"
#: What a canary asks for: small and cheap, and recognisable in job lists.
CANARY_PROMPT = "Semantest canary for {provider}: one small blue square"

Submit = Callable[[JobRecord], Awaitable[None]]


class ProviderHealth(CamelModel):
    """A provider's health as its canaries found it."""

    #: `ok`, `degraded`, or `unknown` (no canary has ended yet).
    status: str = "unknown"
    #: When the status last changed.
    since: float | None = Field(default=None, description=EPOCH)
    #: Failed canaries in a row.
    failures: int = 0
    #: Why it is degraded: the last failed canary's error.
    reason: str | None = None
    #: The last canary job and when it was submitted.
    canary_job: str | None = None
    canary_at: float | None = Field(default=None, description=EPOCH)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def health(redis: Redis) -> dict[str, ProviderHealth]:
    """Every known provider's health."""
    names = providers.names()
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.provider_health(name))
        raws = await pipe.execute()
    out = {}
    for name, raw in zip(names, raws, strict=True):
        fields = {_text(k): _text(v) for k, v in raw.items()}
        out[name] = ProviderHealth(
            status=fields.get("status", "unknown"),
            since=float(fields["since"]) if "since" in fields else None,
            failures=int(fields.get("failures", 0)),
            reason=fields.get("reason") or None,
            canary_job=fields.get("canaryJob") or None,
            canary_at=float(fields["canaryAt"]) if "canaryAt" in fields else None,
        )
    return out


class Canaries:
    """Submits and judges canary jobs; `tick()` is called by the controller's scheduler loop."""

    def __init__(self, redis: Redis, settings: Settings, submit: Submit) -> None:
        self.redis, self.settings, self.submit = redis, settings, submit
        self.jobs = JobStore(redis)
        self._token = secrets.token_hex(8)
        self._started = time.time()

    async def tick(self, now: float | None = None) -> None:
        """One pass: judge ended canaries, submit the ones that are due."""
        interval = self.settings.canary_interval_s
        if interval <= 0:
            return
        if not await self.redis.set(keys.CANARY_LOCK, self._token, nx=True, px=5000):
            if await self.redis.get(keys.CANARY_LOCK) != self._token.encode():
                return  # another controller runs them
            await self.redis.pexpire(keys.CANARY_LOCK, 5000)
        now = time.time() if now is None else now
        room = await routing.capacity(self.redis)
        for name, state in (await health(self.redis)).items():
            if state.canary_job is not None:
                record = await self.jobs.get(state.canary_job)
                if record is not None and not record.status.terminal:
                    if now - (state.canary_at or now) <= self._patience():
                        continue  # still running
                    await self._judge(name, state, None, now)
                elif record is not None:
                    await self._judge(name, state, record, now)
                else:
                    await self.redis.hdel(keys.provider_health(name), "canaryJob")
                state = (await health(self.redis))[name]
            last = state.canary_at or self._started
            due = state.canary_job is None and now - last >= interval
            if due and name in room:
                await self._start(name, now)

    def _patience(self) -> float:
        """How long a canary may take before it counts as failed."""
        s = self.settings
        return 2 * s.canary_interval_s + s.job_timeout_s * s.max_attempts + sum(s.retry_backoff_s)

    async def _start(self, name: str, now: float) -> None:
        record = JobRecord(
            tenant=CANARY_TENANT,
            provider=name,
            prompt=CANARY_PROMPT.format(provider=name),
            priority=Priority.HIGH,
        )
        await self.submit(record)
        await self.redis.hset(
            keys.provider_health(name), mapping={"canaryJob": record.id, "canaryAt": now}
        )
        log.info("canary %s submitted for %s", record.id, name)

    async def _judge(
        self, name: str, state: ProviderHealth, record: JobRecord | None, now: float
    ) -> None:
        key = keys.provider_health(name)
        passed = record is not None and record.status is JobStatus.SUCCEEDED
        if passed:
            await self.redis.hset(key, mapping={"failures": 0, "reason": ""})
            await self.redis.hdel(key, "canaryJob")
            if state.status != "ok":
                await self.redis.hset(key, mapping={"status": "ok", "since": now})
                if state.status == "degraded":
                    await self._alert(name, "recovered", None, record, now)
            return
        if record is None:
            reason = "the canary did not finish in time"
        elif record.error is not None:
            reason = f"{record.error.code}: {record.error.message}"
        else:
            reason = f"the canary ended {record.status.value}"
        failures = state.failures + 1
        await self.redis.hset(key, mapping={"failures": failures, "reason": reason})
        await self.redis.hdel(key, "canaryJob")
        if failures >= self.settings.canary_failures and state.status != "degraded":
            await self.redis.hset(key, mapping={"status": "degraded", "since": now})
            log.warning("provider %s degraded: %s", name, reason)
            await self._alert(name, "degraded", reason, record, now)

    async def _alert(
        self, name: str, change: str, reason: str | None, record: JobRecord | None, now: float
    ) -> None:
        await webhook_events.announce_provider(
            self.redis,
            name,
            change,
            {
                "provider": name,
                "status": "ok" if change == "recovered" else "degraded",
                "reason": reason,
                "canaryJobId": record.id if record is not None else None,
                "at": now,
            },
        )
