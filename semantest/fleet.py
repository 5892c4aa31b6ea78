"""The fleet's heartbeat contract: what each agent publishes about itself and its slots.

Agents write an `AgentHeartbeat` to `keys.agent(id)` every `keys.HEARTBEAT_S` seconds with a
TTL of `keys.LEASE_TTL_S`, and refresh their score in the `keys.AGENTS` sorted set. The
controller reads these for `/api/v1/fleet`, `/api/v1/pressure` and the lease reaper; nothing
else describes an agent. An agent whose heartbeat key is gone (or carries another `boot`) has
lost the leases of every job it was running.
"""

from __future__ import annotations

import time
from enum import Enum

from pydantic import Field
from redis.asyncio import Redis

from semantest import keys
from semantest.models import CamelModel


class SlotState(str, Enum):
    """What one tab slot is doing."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    #: Not taking jobs: logged out, rate-limited, over its account budget, or its page broke.
    PARKED = "parked"
    DRAINING = "draining"


class SlotInfo(CamelModel):
    """One tab slot of an agent."""

    index: int
    #: `<agent id>/<index>`, also what job records show in `agent`.
    name: str
    provider: str
    #: Browser profile / provider account the slot's tab is signed in with.
    account: str
    state: SlotState
    job_id: str | None = None
    #: Why a parked slot is parked (e.g. `logged-out`, `budget`, `rate-limited`).
    parked_reason: str | None = None
    jobs_done: int = 0


class AgentState(str, Enum):
    """Life of an agent process."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


class AddonInUse(CamelModel):
    """An addon the agent's extension has registered."""

    id: str
    version: str


class AgentHeartbeat(CamelModel):
    """What `semantest:agent:<id>` holds (JSON, camelCase)."""

    id: str
    #: Random per process start: a restarted agent with the same id is a different holder.
    boot: str
    host: str
    pid: int
    state: AgentState
    providers: list[str]
    slots: list[SlotInfo] = Field(default_factory=list)
    started_at: float
    beat_at: float
    #: Seconds from process start to browser + extension + first slot ready.
    ready_after_s: float | None = None
    jobs_done: int = 0
    #: Resident memory of the agent, its Playwright driver and Chromium, summed (bytes; pages
    #: shared between these processes are counted once per process).
    rss_bytes: int = 0
    #: Proportional memory of the same processes (bytes; shared pages split): what recycling uses.
    pss_bytes: int = 0
    extension_version: str | None = None
    addons: list[AddonInUse] = Field(default_factory=list)

    @property
    def busy(self) -> int:
        """Slots running a job."""
        return sum(1 for s in self.slots if s.state is SlotState.BUSY)

    @property
    def free(self) -> int:
        """Slots that would take a job now."""
        return sum(1 for s in self.slots if s.state is SlotState.IDLE)


def text(value: object) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


async def heartbeat_records(redis: Redis) -> dict[str, bytes | str]:
    """Agent id → raw heartbeat JSON of every live agent, by id.

    Members of `keys.AGENTS` older than the lease are pruned first; an id whose heartbeat key
    has expired meanwhile is left out. Callers parse the records as strictly as they need.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(keys.AGENTS, "-inf", time.time() - keys.LEASE_TTL_S)
        pipe.zrange(keys.AGENTS, 0, -1)
        _pruned, members = await pipe.execute()
    ids = sorted(text(m) for m in members)
    if not ids:
        return {}
    raws = await redis.mget([keys.agent(i) for i in ids])
    return {agent_id: raw for agent_id, raw in zip(ids, raws, strict=True) if raw is not None}
