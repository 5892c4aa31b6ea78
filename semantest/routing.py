"""Which provider runs a job: one named, `"auto"`, or a list in order of preference.

The submission takes the first candidate that is healthy (not `degraded` by its canaries,
`semantest.canaries`) and has capacity (a live agent slot for it that is not parked); a
retryable provider failure later moves the job to the next candidate not tried yet
(`semantest.attempts.fail_over`). The pure functions decide; `degraded()` and `capacity()`
read what they need from Redis.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from redis.asyncio import Redis

from semantest import keys, providers
from semantest.fleet import heartbeat_records


def candidates(choice: str | Sequence[str]) -> list[str]:
    """The providers a job may run on, in order of preference, each once."""
    if isinstance(choice, str):
        wanted = list(providers.names()) if choice == providers.AUTO else [choice]
    else:
        wanted = list(choice)
    return list(dict.fromkeys(wanted))


def pick(wanted: Sequence[str], degraded: Collection[str], capacity: Collection[str]) -> str:
    """The first candidate that is healthy and has capacity; else the first healthy one; else
    the first (a job asked for one provider waits for it even while it is degraded)."""
    healthy = [p for p in wanted if p not in degraded]
    for p in healthy:
        if p in capacity:
            return p
    return (healthy or list(wanted))[0]


def next_candidate(
    wanted: Sequence[str],
    tried: Collection[str],
    degraded: Collection[str],
    capacity: Collection[str] | None = None,
) -> str | None:
    """Where a failed job fails over to: the next candidate not tried yet, not degraded and
    (when `capacity` is given) with a live slot; None: it stays where it is."""
    for p in wanted:
        if p not in tried and p not in degraded and (capacity is None or p in capacity):
            return p
    return None


async def degraded(redis: Redis) -> set[str]:
    """The providers whose canaries mark them degraded now."""
    names = providers.names()
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hget(keys.provider_health(name), "status")
        states = await pipe.execute()
    return {n for n, s in zip(names, states, strict=True) if s in (b"degraded", "degraded")}


async def capacity(redis: Redis) -> set[str]:
    """The providers with a live, unparked agent slot (API providers: a live API worker's)."""
    found: set[str] = set()
    for raw in (await heartbeat_records(redis)).values():
        try:
            beat = json.loads(raw)
        except ValueError:
            continue
        for slot in beat.get("slots") or []:
            if slot.get("state") != "parked" and slot.get("provider"):
                found.add(str(slot["provider"]))
    return found
