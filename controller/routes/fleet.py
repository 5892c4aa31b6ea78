"""The fleet as agents report it (`/fleet`) and whether it can take more work now (`/pressure`).

Both read the heartbeats agents publish (`semantest.fleet.AgentHeartbeat` at `keys.agent(id)`,
ids in `keys.AGENTS` scored by last beat). An agent is live while its heartbeat key exists;
members of `keys.AGENTS` older than `keys.LEASE_TTL_S` are pruned on every read. A record that
does not validate (an agent of another version) is skipped and logged once per agent id.

`/pressure` is for load balancers and autoscalers: always HTTP 200, the body says whether to send
more work (`isAvailable`) and why not (`reason`). There is no `Retry-After`: callers poll it.
It needs no API key, like `/health`: it exposes counts only.
"""

from __future__ import annotations

import logging
import math
import time

from fastapi import APIRouter
from pydantic import Field, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from controller.auth import AdminCaller
from controller.openapi import success
from controller.state import State
from semantest import canaries, keys
from semantest.canaries import ProviderHealth
from semantest.fleet import (
    AddonInUse,
    AgentHeartbeat,
    AgentState,
    SlotInfo,
    SlotState,
    heartbeat_records,
)
from semantest.models import KNOWN_PROVIDERS, CamelModel, Priority

log = logging.getLogger(__name__)

router = APIRouter(tags=["fleet"])

#: Agent ids whose invalid heartbeat was already logged (bounded; cleared when full).
_warned: set[str] = set()
_WARNED_MAX = 1024

#: Reads every lane's length and moves the hysteresis latch atomically, so all controller
#: processes share one latch. KEYS[1] = latch, KEYS[2..] = (RQ queue list, fair depth counter)
#: per lane (a lane's waiting jobs are both); ARGV = maxQueued,
#: resumeAt, 1 when there is any slot to work (without slots the latch is left alone).
#: Returns {latched (0/1), length of each queue...}.
_PRESSURE_LUA = """
local queued = 0
local lens = {}
for i = 2, #KEYS, 2 do
  local n = redis.call('LLEN', KEYS[i]) + tonumber(redis.call('GET', KEYS[i + 1]) or '0')
  lens[#lens + 1] = n
  queued = queued + n
end
local latched = redis.call('GET', KEYS[1]) == 'queue-full'
if ARGV[3] == '1' then
  if queued >= tonumber(ARGV[1]) then
    redis.call('SET', KEYS[1], 'queue-full')
    latched = true
  elseif latched and queued <= tonumber(ARGV[2]) then
    redis.call('DEL', KEYS[1])
    latched = false
  end
end
local out = {latched and 1 or 0}
for _, n in ipairs(lens) do out[#out + 1] = n end
return out
"""


class FleetTotals(CamelModel):
    """Counts over the live agents; slot counts are by the state each slot reports."""

    agents: int
    slots: int
    busy: int
    idle: int
    parked: int
    draining: int


class Fleet(CamelModel):
    """Every live agent's last heartbeat, and totals."""

    agents: list[AgentHeartbeat]
    totals: FleetTotals
    #: When this was read (unix seconds).
    at: float
    #: Each provider's health as its canaries found it (`ok`, `degraded`, `unknown`).
    providers: dict[str, ProviderHealth] = Field(default_factory=dict)


class Pressure(CamelModel):
    """Whether the deployment can take more work now, and the figures behind the answer."""

    is_available: bool = Field(description="Send more work now?")
    reason: str = Field(
        description="`ok`, `no-agents` (no live slot can take jobs), `queue-full` or "
        "`redis-unavailable`."
    )
    message: str = Field(description="The reason in a sentence, with the figures.")
    slots: int = Field(
        description="Slots that can take jobs: starting, idle or busy slots of live agents that "
        "are not draining."
    )
    free_slots: int = Field(description="Idle ones among `slots`.")
    busy: int = Field(description="Slots running a job.")
    parked: int = Field(description="Parked slots (logged out, over budget, rate-limited).")
    agents: int = Field(description="Live agents.")
    queued: int = Field(
        description="Jobs waiting in RQ queues, all providers and lanes (not scheduled retries, "
        "not running)."
    )
    queued_by_lane: dict[str, int] = Field(description="`<provider>.<lane>` to jobs waiting.")
    max_queued: int = Field(
        description="Unavailable from this many queued jobs: slots * "
        "SEMANTEST_PRESSURE_QUEUE_PER_SLOT."
    )
    resume_at: int = Field(
        description="After `queue-full`, available again only once queued <= this: "
        "floor(maxQueued * SEMANTEST_PRESSURE_RESUME_RATIO)."
    )
    date: float = Field(description="When this was read (unix seconds).")


#: `/openapi.json` examples, built from the models so they always validate.
_AGENT_EXAMPLE = AgentHeartbeat(
    id="agent-1",
    boot="5f0c9a1e",
    host="worker-a",
    pid=4242,
    state=AgentState.READY,
    providers=["sandbox"],
    slots=[
        SlotInfo(
            index=0,
            name="agent-1/0",
            provider="sandbox",
            account="sandbox-1",
            state=SlotState.BUSY,
            job_id="0123abcd",
            jobs_done=12,
        ),
        SlotInfo(
            index=1,
            name="agent-1/1",
            provider="sandbox",
            account="sandbox-2",
            state=SlotState.PARKED,
            parked_reason="logged-out",
            jobs_done=3,
        ),
    ],
    started_at=1764081000.0,
    beat_at=1764081600.0,
    ready_after_s=0.82,
    jobs_done=15,
    rss_bytes=612_000_000,
    pss_bytes=523_000_000,
    extension_version="0.1.0",
    addons=[AddonInUse(id="sandbox", version="0.1.0")],
)
_FLEET_EXAMPLE = Fleet(
    agents=[_AGENT_EXAMPLE],
    totals=FleetTotals(agents=1, slots=2, busy=1, idle=0, parked=1, draining=0),
    at=1764081600.5,
).model_dump(mode="json", by_alias=True)
_PRESSURE_EXAMPLE = Pressure(
    is_available=True,
    reason="ok",
    message="3 job(s) queued for 4 slot(s); limit 80",
    slots=4,
    free_slots=1,
    busy=3,
    parked=0,
    agents=1,
    queued=3,
    queued_by_lane={"sandbox.high": 0, "sandbox.normal": 3, "sandbox.low": 0},
    max_queued=80,
    resume_at=64,
    date=1764081600.5,
).model_dump(mode="json", by_alias=True)


async def live_agents(redis: Redis) -> list[AgentHeartbeat]:
    """Live agents' heartbeats, sorted by id; prunes stale `keys.AGENTS` members first."""
    agents = []
    for agent_id, raw in (await heartbeat_records(redis)).items():
        try:
            agents.append(AgentHeartbeat.model_validate_json(raw))
        except ValidationError as exc:
            if agent_id not in _warned:
                if len(_warned) >= _WARNED_MAX:
                    _warned.clear()
                _warned.add(agent_id)
                log.warning(
                    "skipping agent %s: its heartbeat is not an AgentHeartbeat (%d errors: %s)",
                    agent_id,
                    exc.error_count(),
                    exc.errors(include_url=False)[0]["msg"],
                )
    return agents


def totals_of(agents: list[AgentHeartbeat]) -> FleetTotals:
    """Agent and slot counts by state."""
    states = [s.state for a in agents for s in a.slots]
    return FleetTotals(
        agents=len(agents),
        slots=len(states),
        busy=states.count(SlotState.BUSY),
        idle=states.count(SlotState.IDLE),
        parked=states.count(SlotState.PARKED),
        draining=states.count(SlotState.DRAINING),
    )


@router.get(
    "/fleet",
    response_model=Fleet,
    response_model_by_alias=True,
    responses=success(200, _FLEET_EXAMPLE, description="Live agents and totals."),
)
async def fleet(_caller: AdminCaller, state: State) -> Fleet:
    """Every live agent with its slots (state, job, parked reason, account), and totals."""
    agents = await live_agents(state.redis)
    health = await canaries.health(state.redis)
    return Fleet(agents=agents, totals=totals_of(agents), at=time.time(), providers=health)


@router.get(
    "/pressure",
    response_model=Pressure,
    response_model_by_alias=True,
    responses=success(200, _PRESSURE_EXAMPLE, description="Always 200; `isAvailable` answers."),
)
async def pressure(state: State) -> Pressure:
    """Can this deployment take more work now? Always 200; `isAvailable` answers.

    Unavailable with no live slot (`no-agents`) or when queued ≥ maxQueued (`queue-full`);
    after `queue-full` it stays unavailable until queued ≤ resumeAt (hysteresis shared by every
    controller process through Redis).
    """
    settings = state.settings
    lanes = [(p, lane.value) for p in KNOWN_PROVIDERS for lane in Priority]
    now = time.time()
    try:
        agents = await live_agents(state.redis)
        working = [
            s
            for a in agents
            if a.state is not AgentState.DRAINING
            for s in a.slots
            if s.state in (SlotState.STARTING, SlotState.IDLE, SlotState.BUSY)
        ]
        slots = len(working)
        max_queued = slots * settings.pressure_queue_per_slot
        resume_at = math.floor(max_queued * settings.pressure_resume_ratio)
        queue_keys = [k for p, lane in lanes for k in keys.waiting(p, lane)]
        reply = await state.redis.eval(
            _PRESSURE_LUA,
            1 + len(queue_keys),
            keys.PRESSURE,
            *queue_keys,
            max_queued,
            resume_at,
            1 if slots else 0,
        )
    except (RedisError, OSError) as exc:
        log.warning("pressure: Redis unavailable: %r", exc)
        return Pressure(
            is_available=False,
            reason="redis-unavailable",
            message=f"cannot read Redis ({type(exc).__name__})",
            slots=0,
            free_slots=0,
            busy=0,
            parked=0,
            agents=0,
            queued=0,
            queued_by_lane={},
            max_queued=0,
            resume_at=0,
            date=now,
        )
    latched = bool(reply[0])
    by_lane = {f"{p}.{lane}": int(n) for (p, lane), n in zip(lanes, reply[1:], strict=True)}
    queued = sum(by_lane.values())
    totals = totals_of(agents)
    if not slots:
        available, reason = False, "no-agents"
        message = (
            f"no live agent slot can take jobs ({totals.agents} agent(s), "
            f"{totals.parked} parked slot(s), {totals.draining} draining)"
        )
    elif latched:
        available, reason = False, "queue-full"
        message = (
            f"{queued} job(s) queued for {slots} slot(s); limit {max_queued}, "
            f"available again at ≤ {resume_at}"
        )
    else:
        available, reason = True, "ok"
        message = f"{queued} job(s) queued for {slots} slot(s); limit {max_queued}"
    return Pressure(
        is_available=available,
        reason=reason,
        message=message,
        slots=slots,
        free_slots=sum(1 for s in working if s.state is SlotState.IDLE),
        busy=totals.busy,
        parked=totals.parked,
        agents=totals.agents,
        queued=queued,
        queued_by_lane=by_lane,
        max_queued=max_queued,
        resume_at=resume_at,
        date=now,
    )
