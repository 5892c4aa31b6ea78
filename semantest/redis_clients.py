"""Redis clients that ride out a short Redis outage (a restart, a failover) instead of failing.

Every long-lived process (controller, agents) connects through these: a command that meets a
dropped connection is retried with exponential back-off for about 8 s before the error surfaces.
A WATCH/MULTI transaction interrupted that way raises `WatchError`, which `JobStore.update`
already answers by re-reading and trying again, so no write is applied twice.
"""

from __future__ import annotations

from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry

#: Retries of one command: 0.05 s doubling to 1 s between them, about 8 s in all.
RETRIES = 12
_ERRORS: list[type[Exception]] = [ConnectionError, TimeoutError]
#: Seconds a command waits for a free connection of a bounded pool.
POOL_WAIT_S = 10


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=1.0, base=0.05)


def async_client(url: str, *, max_connections: int | None = None, **kwargs: Any) -> Redis:
    """An asyncio client for `url` that retries through a short outage.

    With `max_connections`, a command that finds every connection busy waits for one (up to
    `POOL_WAIT_S`) instead of failing at once: a burst of requests queues, it does not error.
    """
    if max_connections is None:
        return Redis.from_url(
            url, retry=AsyncRetry(_backoff(), RETRIES), retry_on_error=_ERRORS, **kwargs
        )
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        retry=AsyncRetry(_backoff(), RETRIES),
        retry_on_error=_ERRORS,
        **kwargs,
    )
    return Redis(connection_pool=pool)


def sync_client(url: str, **kwargs: Any) -> SyncRedis:
    """A synchronous client (RQ's) for `url` that retries through a short outage."""
    return SyncRedis.from_url(
        url, retry=Retry(_backoff(), RETRIES), retry_on_error=_ERRORS, **kwargs
    )
