"""Rate-limit plans: what each tenant plan allows, overall and per endpoint.

A tenant's plan (`Caller.plan`) names one `Plan`. Every limited request takes one unit from
two buckets at once (`controller/ratelimit.py`, one Lua script): its endpoint's bucket, when the
route has one, and the plan's overall bucket, when the route counts toward it. A plan is one
table of both, so a bigger plan raises the endpoint limits with the overall one: a partner
pushing thousands of prompts is bounded by its 1,000 rpm and 2,000 burst, not by the 30
generate/min that hold one standard tenant to its share.

Built-in plans are `PLANS`; `SEMANTEST_RATE_LIMIT_PLANS` (`PlanSpec` per name) changes any of
their numbers or adds plans (`resolve_plans`). An unknown plan name falls back to `standard`.

Kernel module: imports nothing of ours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Endpoint(str, Enum):
    """A group of routes sharing one bucket per tenant (the name is part of the Redis key)."""

    CHAT_NEW = "chat.new"
    GENERATE = "images.generate"
    #: `POST /images/batch` and its alias `POST /batch/generate`.
    BATCH = "images.batch"
    STATUS = "images.status"
    #: The addon index and sources; per client IP when the request carries no key.
    ADDONS = "addons"


@dataclass(frozen=True)
class Limit:
    """`count` requests per `period_s`, of which up to `burst` at once (GCRA)."""

    count: int
    period_s: int = 60
    #: How many requests an idle bucket takes at once; default `count` (a full period's worth).
    burst: int | None = None

    @property
    def capacity(self) -> int:
        """Requests an idle bucket takes back to back (what `RateLimit-Limit` reports)."""
        return self.burst or self.count

    @property
    def interval_us(self) -> int:
        """Microseconds one request costs: a bucket refills one unit per interval."""
        return max(1, math.ceil(self.period_s * 1_000_000 / self.count))

    def describe(self) -> str:
        """`30 per 60 s` (`, burst 2000` when it differs)."""
        burst = f", burst {self.capacity}" if self.capacity != self.count else ""
        return f"{self.count} per {self.period_s} s{burst}"


@dataclass(frozen=True)
class Plan:
    """What one plan allows: overall per tenant, and per endpoint."""

    name: str
    #: Every client-API request of the tenant counts here (not the addon GETs).
    overall: Limit
    endpoints: Mapping[Endpoint, Limit] = field(default_factory=dict)


#: The defaults: a tenant without a bigger plan, and the per-endpoint protections of the service.
STANDARD = Plan(
    "standard",
    overall=Limit(100),
    endpoints={
        Endpoint.CHAT_NEW: Limit(10),
        Endpoint.GENERATE: Limit(30),
        Endpoint.BATCH: Limit(5),
        Endpoint.STATUS: Limit(120),
        Endpoint.ADDONS: Limit(1000),
    },
)
#: Platforms generating in bulk: a partner may spend its whole plan on any endpoint, so the
#: overall 1,000 rpm with its 2,000 burst is what binds, whether it sends single prompts,
#: batches or status reads. Keeping one tenant's backlog from delaying the others is the fair
#: lanes' job (agents/worker.py), not the limiter's.
_PARTNER_RATE = Limit(1000, burst=2000)
PARTNER = Plan(
    "partner",
    overall=_PARTNER_RATE,
    endpoints={
        Endpoint.CHAT_NEW: _PARTNER_RATE,
        Endpoint.GENERATE: _PARTNER_RATE,
        Endpoint.BATCH: _PARTNER_RATE,
        Endpoint.STATUS: _PARTNER_RATE,
        Endpoint.ADDONS: Limit(10_000, burst=20_000),
    },
)
PLANS: Mapping[str, Plan] = {p.name: p for p in (STANDARD, PARTNER)}
DEFAULT_PLAN = STANDARD.name

Count = Annotated[int, Field(ge=1, le=10_000_000)]


class LimitSpec(BaseModel):
    """A limit in settings; omitted fields keep the plan's (or default as in `Limit`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: Count | None = None
    period_s: Annotated[int, Field(ge=1, le=86_400)] | None = None
    burst: Count | None = None

    def over(self, base: Limit | None) -> Limit:
        """This spec applied to `base` (a new endpoint limit needs `count`)."""
        if base is None:
            if self.count is None:
                raise ValueError("a limit the plan does not have yet needs a count")
            return Limit(self.count, self.period_s or 60, self.burst)
        changed = self.model_dump(exclude_none=True)
        if "count" in changed and "burst" not in changed:
            changed["burst"] = None  # a new rate with the old burst would mean something else
        return replace(base, **changed)


class PlanSpec(BaseModel):
    """One plan in `SEMANTEST_RATE_LIMIT_PLANS`: changes to a built-in plan, or a new one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    overall: LimitSpec | None = None
    endpoints: dict[Endpoint, LimitSpec] = Field(default_factory=dict)


def resolve_plans(specs: Mapping[str, PlanSpec]) -> dict[str, Plan]:
    """The built-in plans with `specs` applied. A new name starts from `standard`'s endpoint
    limits and must give its `overall` count."""
    plans = dict(PLANS)
    for name, spec in specs.items():
        base = plans.get(name)
        if base is None:
            if spec.overall is None:
                raise ValueError(f"plan {name!r} is not built in: give its overall count")
            base = Plan(name, overall=spec.overall.over(None), endpoints=STANDARD.endpoints)
        overall = base.overall if spec.overall is None else spec.overall.over(base.overall)
        endpoints = dict(base.endpoints)
        for endpoint, limit in spec.endpoints.items():
            endpoints[endpoint] = limit.over(endpoints.get(endpoint))
        plans[name] = Plan(name, overall=overall, endpoints=endpoints)
    return plans
