"""Per-account budgets on a real redis-server: limits, sliding window, atomic under races."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from browser_profiles.budget import UNLIMITED, AccountBudget
from semantest import keys

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def account() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


async def test_takes_stop_at_the_limit_per_account(redis: aioredis.Redis) -> None:
    budget = AccountBudget(redis, per_hour=3)
    a, b = account(), account()
    assert await budget.remaining(a) == 3
    assert [await budget.try_take(a) for _ in range(4)] == [True, True, True, False]
    assert await budget.remaining(a) == 0
    assert 3590 < await budget.next_free_in(a) <= 3600
    assert await budget.try_take(b) is True  # accounts do not share a budget
    assert await budget.remaining(b) == 2 and await budget.next_free_in(b) == 0
    ttl = await redis.pttl(keys.account_budget(a))
    assert 0 < ttl <= 3600 * 1000


async def test_the_window_slides(redis: aioredis.Redis) -> None:
    budget = AccountBudget(redis, per_hour=2, window_ms=400)
    a = account()
    assert await budget.try_take(a) and await budget.try_take(a)
    assert not await budget.try_take(a)
    wait = await budget.next_free_in(a)
    assert 0 < wait <= 0.4
    await asyncio.sleep(wait + 0.05)
    assert await budget.remaining(a) == 2
    assert await budget.try_take(a)
    assert await budget.remaining(a) == 1


async def test_concurrent_agents_never_overspend(redis_url: str) -> None:
    a = account()
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(4)]
    try:
        budgets = [AccountBudget(c, per_hour=7) for c in clients]
        results = await asyncio.gather(*(budgets[i % 4].try_take(a) for i in range(40)))
        assert sum(results) == 7
        assert await clients[0].zcard(keys.account_budget(a)) == 7
    finally:
        for c in clients:
            await c.aclose()


async def test_zero_means_unlimited(redis: aioredis.Redis) -> None:
    budget = AccountBudget(redis, per_hour=0)
    a = account()
    assert all([await budget.try_take(a) for _ in range(50)])
    assert await budget.remaining(a) == UNLIMITED
    assert await budget.next_free_in(a) == 0
    assert not await redis.exists(keys.account_budget(a))


def test_negative_budget_is_refused(redis: aioredis.Redis) -> None:
    with pytest.raises(ValueError):
        AccountBudget(redis, per_hour=-1)
