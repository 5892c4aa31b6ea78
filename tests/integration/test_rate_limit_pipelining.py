"""Auto-pipelined rate-limit checks against real Redis: coalescing keeps every check atomic.

The checks a process starts in one event-loop tick go out together (one round trip, one script
call deciding each check in turn, at most 256 a call). These tests fire many checks at once and
look at what Redis decided: exactly the bucket's capacity through, each allowed check with its
own remaining count, one connection used for the whole burst, a flushed script cache
recovered, cancelled callers not disturbing the others, and an unreachable Redis failing every
caller (the routes then let the request through).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from controller.ratelimit import Decision, RateLimiter
from semantest.plans import PLANS, Limit, Plan, resolve_plans
from semantest.stack import free_port

pytestmark = pytest.mark.integration
HOUR = 3600
DB = 41


def db_url(redis_url: str, db: int = DB) -> str:
    return f"{redis_url.rsplit('/', 1)[0]}/{db}"


def run(redis_url: str, body: Callable[[RateLimiter, AsyncRedis], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        client = AsyncRedis.from_url(db_url(redis_url), client_name=NAME, max_connections=256)
        try:
            return await body(RateLimiter(client, dict(PLANS)), client)
        finally:
            await client.aclose()

    return asyncio.run(go())


NAME = f"pipelining-{uuid.uuid4().hex[:8]}"
CAPACITY = 23
LIMIT = Limit(CAPACITY, HOUR)


def subject() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def burst(limiter: RateLimiter, who: str, n: int) -> list[Decision]:
    return list(await asyncio.gather(*(limiter.check(who, [("x", LIMIT)]) for _ in range(n))))


def connections() -> int:
    """Connections Redis has open for this module's clients."""
    return sum(c.get("name") == NAME for c in redis.Redis.from_url(REDIS).client_list())


REDIS = ""


@pytest.fixture(autouse=True)
def _redis(redis_url: str) -> None:
    global REDIS
    REDIS = redis_url
    redis.Redis.from_url(db_url(redis_url)).flushdb()


def test_200_concurrent_checks_let_exactly_capacity_through_in_one_round_trip(
    redis_url: str,
) -> None:
    async def body(limiter: RateLimiter, client: AsyncRedis) -> tuple[list[Decision], int]:
        decisions = await burst(limiter, subject(), 200)
        return decisions, connections()

    decisions, used = run(redis_url, body)
    allowed = [d for d in decisions if d.allowed]
    refused = [d for d in decisions if not d.allowed]
    assert len(decisions) == 200 and len(allowed) == CAPACITY
    # each allowed check ran atomically on its own: remaining 22, 21, ... 0, each seen once
    assert sorted(d.binding.remaining for d in allowed) == list(range(CAPACITY))
    assert all(d.binding.remaining == 0 and d.retry_after_s >= 1 for d in refused)
    # 200 checks started in one tick shared one pipeline, hence one connection
    assert used == 1


def test_a_flushed_script_cache_is_recovered(redis_url: str) -> None:
    async def body(limiter: RateLimiter, client: AsyncRedis) -> tuple[int, int, int]:
        who = subject()
        first = sum(d.allowed for d in await burst(limiter, who, 5))
        await client.script_flush()
        assert await client.script_exists(limiter._script.sha) == [False]
        after = sum(d.allowed for d in await burst(limiter, who, 100))
        loaded = await client.script_exists(limiter._script.sha)
        return first, after, int(loaded[0])

    first, after, loaded = run(redis_url, body)
    assert (first, after, loaded) == (5, CAPACITY - 5, 1)


def test_cancelled_callers_do_not_disturb_the_others(redis_url: str) -> None:
    async def body(limiter: RateLimiter, client: AsyncRedis) -> tuple[int, int]:
        who = subject()
        tasks = [asyncio.create_task(limiter.check(who, [("x", LIMIT)])) for _ in range(40)]
        await asyncio.sleep(0)  # every check is queued; cancel half before the answers come
        for t in tasks[::2]:
            t.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        answered = [d for d in done if isinstance(d, Decision)]
        cancelled = sum(isinstance(d, asyncio.CancelledError) for d in done)
        # the cancelled checks may still have run in Redis: the bucket is never over-spent
        left = (await limiter.check(who, [("x", LIMIT)])).binding.remaining
        assert left <= CAPACITY - 1 - sum(d.allowed for d in answered)
        return len(answered), cancelled

    assert run(redis_url, body) == (20, 20)


def test_an_unreachable_redis_fails_every_caller(redis_url: str) -> None:
    async def go() -> list[Any]:
        client = AsyncRedis(port=free_port(), socket_connect_timeout=1)
        limiter = RateLimiter(client, resolve_plans({}))
        try:
            checks = (limiter.check(subject(), [("x", LIMIT)]) for _ in range(10))
            return list(await asyncio.gather(*checks, return_exceptions=True))
        finally:
            await client.aclose()

    outcomes = asyncio.run(go())
    assert len(outcomes) == 10
    assert all(isinstance(o, RedisConnectionError | OSError) for o in outcomes), outcomes


def test_checks_from_different_ticks_get_their_own_pipelines(redis_url: str) -> None:
    plan = Plan("tight", overall=Limit(1000, HOUR), endpoints={})

    async def body(limiter: RateLimiter, client: AsyncRedis) -> list[int]:
        who = subject()
        seen = []
        for _ in range(5):  # one after the other: each answer already counts the ones before
            seen.append((await limiter.check(who, [("all", plan.overall)])).binding.remaining)
        return seen

    assert run(redis_url, body) == [999, 998, 997, 996, 995]


def test_mixed_checks_in_one_tick_each_get_their_own_answer(redis_url: str) -> None:
    """600 checks at once (more than one script call holds), one or two buckets each."""
    small, overall = Limit(7, HOUR), Limit(11, HOUR)

    async def body(limiter: RateLimiter, client: AsyncRedis) -> tuple[int, int, int]:
        a, b = subject(), subject()
        one = [limiter.check(a, [("x", small)]) for _ in range(300)]
        two = [limiter.check(b, [("x", small), ("all", overall)]) for _ in range(300)]
        mixed = [c for pair in zip(one, two, strict=True) for c in pair]
        decisions = await asyncio.gather(*mixed)
        ones, twos = decisions[0::2], decisions[1::2]
        assert all(len(d.buckets) == 1 for d in ones) and all(len(d.buckets) == 2 for d in twos)
        left = [d.buckets[1].remaining for d in twos if d.allowed]
        assert sorted(left) == list(range(4, 11))  # the overall bucket lent 7 of its 11
        return sum(d.allowed for d in ones), sum(d.allowed for d in twos), connections()

    assert run(redis_url, body) == (7, 7, 1)
