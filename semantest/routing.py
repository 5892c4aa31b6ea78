"""Which provider runs a job: one named, `"auto"`, or a list in order of preference.

The submission takes the first candidate that is healthy (not `degraded` by its canaries)
and has capacity (a live slot for it, or an API provider); a retryable failure later moves
the job to the next candidate (failover, `semantest.attempts`). Pure functions: the callers
bring what they read from Redis.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from semantest import providers


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
    wanted: Sequence[str], tried: Collection[str], degraded: Collection[str]
) -> str | None:
    """Where a failed job fails over to: the next candidate not tried yet and not degraded."""
    for p in wanted:
        if p not in tried and p not in degraded:
            return p
    return None
