"""Rate limits: one atomic check per request over the endpoint's bucket and the plan's overall one.

Each bucket is a GCRA (generic cell rate algorithm) state in Redis, one key holding its
theoretical arrival time (`semantest.keys.rate_bucket`). One Lua script reads the clock
(Redis `TIME`, so every controller process shares one clock), checks every bucket of the
request and takes one unit from each only when all of them allow it: a request refused by the
overall limit does not use up its endpoint's, and the other way round. Which buckets a request
takes and their sizes come from the caller's plan (`semantest/plans.py`):

- `limit(Endpoint.GENERATE)` (and the other endpoints): the endpoint's bucket and the plan's
  overall bucket, both per tenant;
- `limit()`: the overall bucket only (the rest of the client API);
- `limit(Endpoint.ADDONS)`: the addon bucket only, per tenant, or per client IP (with the
  `standard` plan's limit) when the request carries no key, as extension installs do.

Every answer of a limited route, errors included, carries `RateLimit-Limit` (the bucket's size),
`RateLimit-Remaining` and `RateLimit-Reset` (seconds until it is full again) of the bucket
closest to refusing; a refusal is `429 RATE_LIMITED` with `Retry-After` (whole seconds, at
least 1). The headers are added by `LimitedRoute`, so routes that answer a `Response` of their
own, and errors raised after the check, carry them too. `SEMANTEST_RATE_LIMITS=false` turns
every check off. The check rides out a short Redis outage like every other command
(`semantest/redis_clients.py`); when Redis stays unreachable the request goes through unlimited
(logged): the route itself reports what it cannot do without Redis.

Checks are auto-pipelined: the checks a process starts in one event-loop tick go to Redis
together, as one `EVALSHA` of the script that runs them one after the other (one round trip,
at most 256 checks a call), and each caller awaits its own answer. Each check is still decided
atomically on its own buckets, exactly as if it had run alone, against the one Redis every
process shares; only the round trip (and the script call's overhead) is shared. A `NOSCRIPT`
answer (Redis restarted or `SCRIPT FLUSH`) loads the script again and re-sends the call once; a
Redis error fails every check of that call as it would have failed alone, and a cancelled
caller leaves the others' answers alone.

Must not import the route modules (they import this one).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError
from starlette.types import Message, Receive, Scope, Send

from controller.auth import AddonCallerDep, Caller, CallerDep
from controller.openapi import responses
from controller.state import AppState, State
from semantest import keys
from semantest.errors import RateLimited
from semantest.metrics import RATE_LIMITED
from semantest.plans import DEFAULT_PLAN, Endpoint, Limit, Plan, resolve_plans

log = logging.getLogger(__name__)

#: The bucket name of a plan's overall limit.
OVERALL = "all"
#: Seconds between two warnings that Redis could not be asked (it fails every request then).
_WARN_EVERY_S = 10.0
_warned_at = -_WARN_EVERY_S

#: Many checks in one script run, each one exactly as if it ran alone, one after the other.
#: KEYS: every check's buckets, check after check. ARGV: the number of checks, then per check
#: its number of buckets and, per bucket, the microseconds one request costs and how many
#: requests the bucket holds. Returns, per check: allowed (1/0), microseconds until it would
#: be allowed, then per bucket the requests it would still take now and microseconds until it
#: is full. A bucket's value is its theoretical arrival time (TAT): full while TAT <= now; a
#: request fits while TAT + interval - capacity * interval <= now.
CHECK_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local out = {}
local k = 0
local a = 2
for _ = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a])
  local tats = {}
  local wait = 0
  for i = 1, n do
    local interval = tonumber(ARGV[a + 2 * i - 1])
    local capacity = tonumber(ARGV[a + 2 * i])
    local tat = tonumber(redis.call('GET', KEYS[k + i]) or '0')
    if tat < now then tat = now end
    tats[i] = tat
    local early = tat + interval - capacity * interval - now
    if early > wait then wait = early end
  end
  local allowed = wait <= 0
  out[#out + 1] = allowed and 1 or 0
  out[#out + 1] = math.ceil(wait)
  for i = 1, n do
    local interval = tonumber(ARGV[a + 2 * i - 1])
    local capacity = tonumber(ARGV[a + 2 * i])
    local tat = tats[i]
    if allowed then
      tat = tat + interval
      redis.call('SET', KEYS[k + i], string.format('%.0f', tat),
                 'PX', math.ceil((tat - now) / 1000) + 1)
    end
    out[#out + 1] = math.floor((now + capacity * interval - tat) / interval)
    out[#out + 1] = tat - now
  end
  k = k + n
  a = a + 2 * n + 1
end
return out
"""


@dataclass(frozen=True)
class Bucket:
    """One bucket after a check: what it allows and what is left of it."""

    name: str
    limit: Limit
    #: Requests it would still take now.
    remaining: int
    #: Seconds until it is full again (rounded up).
    reset_s: int


@dataclass(frozen=True)
class Decision:
    """The answer of one check."""

    allowed: bool
    #: Whole seconds until the request would be allowed (0 when it was).
    retry_after_s: int
    buckets: tuple[Bucket, ...]

    @property
    def binding(self) -> Bucket:
        """The bucket closest to refusing: the one the headers describe."""
        return min(self.buckets, key=lambda b: (b.remaining, -b.reset_s))

    def headers(self) -> list[tuple[bytes, bytes]]:
        """`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` of the binding bucket."""
        b = self.binding
        values = (b.limit.capacity, b.remaining, b.reset_s)
        return [(name, str(v).encode()) for name, v in zip(_HEADER_NAMES, values, strict=True)]


_HEADER_NAMES = (b"ratelimit-limit", b"ratelimit-remaining", b"ratelimit-reset")


#: One queued check: its keys, its arguments (bucket count, then the limits; bytes, so redis-py
#: sends them as they are) and the future its caller awaits.
_Pending = tuple[list[bytes], list[bytes], "asyncio.Future[list[int]]"]
#: The most checks one script run takes (a script holds Redis while it runs: ~1 µs a check).
_MAX_BATCH = 256


class RateLimiter:
    """Checks requests against the plans: each one atomic, the checks of one tick in one call."""

    def __init__(self, redis: Redis, plans: Mapping[str, Plan]) -> None:
        self.plans = plans
        self._redis = redis
        self._script = redis.register_script(CHECK_LUA)
        self._sha = self._script.sha.encode()
        self._encoded: dict[Limit, list[bytes]] = {}
        self._pending: list[_Pending] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._anonymous_addons = self._addons(self.plan(DEFAULT_PLAN))

    def plan(self, name: str) -> Plan:
        """The plan of that name; `standard` for a name we do not know."""
        return self.plans.get(name) or self.plans[DEFAULT_PLAN]

    async def check(self, subject: str, buckets: Sequence[tuple[str, Limit]]) -> Decision:
        """Take one request from every bucket of `subject`, or from none of them."""
        names = [keys.rate_bucket(name, subject).encode() for name, _ in buckets]
        args = [str(len(buckets)).encode()]
        for _name, limit in buckets:
            args += self._encoded.get(limit) or self._encode(limit)
        raw = await self._run(names, args)
        allowed, wait_us, rest = raw[0] == 1, raw[1], raw[2:]
        return Decision(
            allowed=allowed,
            retry_after_s=0 if allowed else max(1, math.ceil(wait_us / 1_000_000)),
            buckets=tuple(
                Bucket(name, limit, max(0, rest[2 * i]), math.ceil(rest[2 * i + 1] / 1_000_000))
                for i, (name, limit) in enumerate(buckets)
            ),
        )

    async def check_anonymous_addons(self, client: str) -> Decision:
        """The addon bucket of a request without a key, by client address (the hot path)."""
        return await self.check(f"ip:{client}", ((Endpoint.ADDONS.value, self._anonymous_addons),))

    def _encode(self, limit: Limit) -> list[bytes]:
        encoded = [str(limit.interval_us).encode(), str(limit.capacity).encode()]
        self._encoded[limit] = encoded
        return encoded

    def _run(self, names: list[bytes], args: list[bytes]) -> asyncio.Future[list[int]]:
        """Queue one check; the queue goes out as one script run on the loop's next turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self._pending.append((names, args, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._flushing.add(task)  # keep a reference until it is done
        task.add_done_callback(self._flushing.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        """Run the batch's checks in one script call; answer (or fail) each caller."""
        try:
            results: list[int] = []
            for start in range(0, len(batch), _MAX_BATCH):
                results += await self._script_call(batch[start : start + _MAX_BATCH])
        except asyncio.CancelledError:
            for _names, _args, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # every caller gets the error its own call would have had
            for _names, _args, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        at = 0
        for names, _args, future in batch:
            end = at + 2 + 2 * len(names)
            if not future.done():  # else its caller was cancelled
                future.set_result(results[at:end])
            at = end

    async def _script_call(self, batch: Sequence[_Pending]) -> list[int]:
        names: list[bytes] = []
        args = [str(len(batch)).encode()]
        for keys_, args_, _future in batch:
            names += keys_
            args += args_
        command = [self._sha, str(len(names)).encode(), *names, *args]
        try:
            return list(await self._redis.execute_command(b"EVALSHA", *command))  # type: ignore[no-untyped-call]
        except NoScriptError:  # the script cache was emptied (restart, SCRIPT FLUSH): load it
            await self._redis.script_load(CHECK_LUA)
            return list(await self._redis.execute_command(b"EVALSHA", *command))  # type: ignore[no-untyped-call]

    def buckets_of(
        self, caller: Caller | None, endpoint: Endpoint | None, client: str
    ) -> tuple[str, list[tuple[str, Limit]]]:
        """Whose buckets a request takes from (`t:<tenant>` or `ip:<address>`) and which."""
        if caller is None:  # only the addon GETs let a request without a key this far
            return f"ip:{client}", [(Endpoint.ADDONS.value, self._addons(self.plan(DEFAULT_PLAN)))]
        plan = self.plan(caller.plan)
        subject = f"t:{caller.tenant}"
        if endpoint is Endpoint.ADDONS:
            return subject, [(endpoint.value, self._addons(plan))]
        chosen = [] if endpoint is None else [(endpoint.value, plan.endpoints[endpoint])]
        return subject, [*chosen, (OVERALL, plan.overall)]

    @staticmethod
    def _addons(plan: Plan) -> Limit:
        return plan.endpoints[Endpoint.ADDONS]


def limiter_of(request: Request, state: AppState) -> RateLimiter:
    """The app's limiter, built on first use from its Redis client and settings."""
    app_state = request.app.state
    limiter: RateLimiter | None = getattr(app_state, "rate_limiter", None)
    if limiter is None:
        limiter = RateLimiter(state.redis, resolve_plans(state.settings.rate_limit_plans))
        app_state.rate_limiter = limiter
    return limiter


async def enforce(
    request: Request, state: AppState, caller: Caller | None, endpoint: Endpoint | None
) -> None:
    """Check the request; note its headers for `LimitedRoute`; raise 429 when refused."""
    if not state.settings.rate_limits:
        return
    limiter = limiter_of(request, state)
    client = request.client.host if request.client else "unknown"
    subject, buckets = limiter.buckets_of(caller, endpoint, client)
    try:
        decision = await limiter.check(subject, buckets)
    except (RedisError, OSError) as exc:
        global _warned_at
        if time.monotonic() - _warned_at > _WARN_EVERY_S:  # once in a while, not per request
            _warned_at = time.monotonic()
            log.warning("rate limits not checked (Redis: %r): letting requests through", exc)
        return
    request.state.rate_limit_headers = decision.headers()
    if not decision.allowed:
        b = decision.binding
        what = "requests" if b.name == OVERALL else f"{b.name} requests"
        plan = "" if caller is None else f" on plan {limiter.plan(caller.plan).name}"
        RATE_LIMITED.labels(b.name, limiter.plan(caller.plan).name if caller else "anonymous").inc()
        raise RateLimited(
            f"too many {what}{plan} ({b.limit.describe()}); retry in {decision.retry_after_s} s",
            retry_after_s=decision.retry_after_s,
        )


@dataclass(frozen=True)
class RateLimit:
    """The dependency `limit()` adds to a route: checks the caller's buckets for `endpoint`."""

    endpoint: Endpoint | None = None

    async def __call__(self, request: Request, caller: CallerDep, state: State) -> None:
        await enforce(request, state, caller, self.endpoint)


@dataclass(frozen=True)
class AddonRateLimit(RateLimit):
    """The addon GETs' check: the caller is optional there (`SEMANTEST_ADDONS_PUBLIC`)."""

    async def __call__(self, request: Request, caller: AddonCallerDep, state: State) -> None:
        await enforce(request, state, caller, self.endpoint)


def limit(endpoint: Endpoint | None = None) -> Any:
    """A route dependency (`dependencies=[limit(Endpoint.GENERATE)]`) that rate-limits the route:
    its endpoint's bucket and the plan's overall one; `limit()` the overall one only.

    The route's router must be built with `route_class=LimitedRoute` for the headers.
    """
    if endpoint is Endpoint.ADDONS:
        return Depends(AddonRateLimit(endpoint))
    return Depends(RateLimit(endpoint))


class LimitedRoute(APIRoute):
    """A route whose every answer carries the rate-limit headers its check decided.

    Wraps `send`, so the headers reach answers the route builds itself (`Response`, redirects,
    304s) and error envelopes raised after the check, not only FastAPI's own responses.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = scope.get("state", {}).get("rate_limit_headers")
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await super().handle(scope, receive, send_with_limits)


_RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": "Requests the binding bucket holds (its burst).",
    "RateLimit-Remaining": "Requests it would still take now.",
    "RateLimit-Reset": "Seconds until it is full again.",
}


def rate_limited() -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a limited route's 429 (merge with `|`)."""
    answer = responses(RateLimited)
    documented = {
        name: {"description": text, "required": True, "schema": {"type": "string"}}
        for name, text in _RATE_LIMIT_HEADERS.items()
    }
    answer[RateLimited.status]["headers"] = {**answer[RateLimited.status]["headers"], **documented}
    return answer
