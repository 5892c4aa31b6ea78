"""Per-account job budgets: at most N jobs per provider account in any sliding hour.

A provider account is a browser profile's login. Before running a job on an account, the agent
asks `await budget.try_take(account)`; False means the account has used its hour and the job
should wait (or go to another account). `remaining(account)` and `next_free_in(account)` tell
how much is left and when the next unit frees up.

One Redis sorted set per account (`semantest.keys.account_budget`): member = one take, score =
its time in ms by the Redis server's clock (so agents' clocks do not matter). A Lua script drops
takes older than the window, counts, and adds the new take only when under the limit — one
atomic step, so concurrent agents never overspend. The key expires one window after the last
take. `per_hour == 0` means no budget: every take succeeds and Redis is not touched.
"""

from __future__ import annotations

import secrets
import sys
from typing import Any

import redis.asyncio as aioredis

from semantest import keys

#: The sliding window.
WINDOW_MS = 3600 * 1000
#: What `remaining` says for an unlimited budget.
UNLIMITED = sys.maxsize

# KEYS[1] = the account's set; ARGV = limit, window ms, a unique id for this take.
_TAKE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], ms, ms .. '-' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""

# KEYS[1] = the account's set; ARGV = window ms. Returns {used in window, ms until the oldest
# take leaves it (0 when none)}.
_USED = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[1])
local used = redis.call('ZCOUNT', KEYS[1], '(' .. (ms - window), '+inf')
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (ms - window), '+inf',
                          'WITHSCORES', 'LIMIT', 0, 1)
local wait = 0
if oldest[2] then wait = tonumber(oldest[2]) + window - ms end
return {used, wait}
"""


class AccountBudget:
    """At most `per_hour` takes per account in any sliding hour (0: unlimited)."""

    def __init__(self, redis: aioredis.Redis, per_hour: int, *, window_ms: int = WINDOW_MS):
        if per_hour < 0:
            raise ValueError("per_hour must be >= 0")
        self.redis = redis
        self.per_hour = per_hour
        self.window_ms = window_ms
        self._take: Any = redis.register_script(_TAKE)
        self._used: Any = redis.register_script(_USED)

    async def try_take(self, account: str) -> bool:
        """Spend one unit of `account`'s budget if it has one left; False when it has not."""
        if self.per_hour == 0:
            return True
        take_id = secrets.token_hex(8)  # unique across agents taking in the same ms
        taken = await self._take(
            keys=[keys.account_budget(account)], args=[self.per_hour, self.window_ms, take_id]
        )
        return bool(taken)

    async def remaining(self, account: str) -> int:
        """Units `account` may still take in the current window (`UNLIMITED` without budget)."""
        if self.per_hour == 0:
            return UNLIMITED
        used, _wait = await self._used(keys=[keys.account_budget(account)], args=[self.window_ms])
        return max(0, self.per_hour - int(used))

    async def next_free_in(self, account: str) -> float:
        """Seconds until `account` can take again (0 when it can now)."""
        if self.per_hour == 0:
            return 0.0
        used, wait = await self._used(keys=[keys.account_budget(account)], args=[self.window_ms])
        return 0.0 if int(used) < self.per_hour else max(0.0, int(wait) / 1000)
