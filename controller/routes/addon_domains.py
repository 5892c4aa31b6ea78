"""A tenant's addon domain allowlist: the pages `resolve` may answer bundles for.

Stored as JSON at `semantest:addons:domains:<tenant>`. An entry is a host name (`example.com`,
exactly that host; an IDN in its `xn--` form) or a wildcard (`*.example.com`: the domain and
every subdomain), with
the host semantics of Chrome's match patterns (`addons.match`). No list, or an empty one: every
domain is allowed. A page outside a non-empty list: 403 `DOMAIN_NOT_ALLOWED`.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from redis.asyncio import Redis

from addons.match import MatchPattern, ParsedUrl, PatternError
from controller.auth import AdminCaller, Caller, require
from controller.openapi import responses, success
from controller.routes.admin import SharedPathRoute
from controller.state import State
from semantest.errors import DomainNotAllowed

#: `GET` and `PUT /addons/allowlist` share a path: a 405 names both.
router = APIRouter(route_class=SharedPathRoute)

#: A host name (ASCII; an IDN in its xn-- form), optionally `*.`-prefixed; no IP addresses.
DOMAIN = (
    r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
Domain = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DOMAIN)]


def domains_key(tenant: str) -> str:
    """Where a tenant's allowlist lives."""
    return f"semantest:addons:domains:{tenant}"


class Allowlist(BaseModel):
    """`PUT /addons/allowlist`: the domains a tenant's pages may get addons on."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"domains": ["example.com", "*.example.org"]}}
    )

    domains: list[Domain] = Field(max_length=1000)

    @field_validator("domains")
    @classmethod
    def _hosts(cls, domains: list[str]) -> list[str]:
        for domain in domains:
            try:
                MatchPattern.parse(f"*://{domain}/*")
            except PatternError:
                raise ValueError(f"{domain!r} is not a host or *.host") from None
        return domains


async def allowed_domains(redis: Redis, tenant: str) -> list[str]:
    """The tenant's allowlist (empty: every domain)."""
    raw = await redis.get(domains_key(tenant))
    return list(json.loads(raw)) if raw else []


async def check_domain(redis: Redis, tenant: str, url: str) -> None:
    """403 DOMAIN_NOT_ALLOWED when `url`'s host is outside the tenant's non-empty allowlist."""
    domains = await allowed_domains(redis, tenant)
    if not domains:
        return
    target = ParsedUrl.of(url)
    if target is not None and any(MatchPattern.parse(f"*://{d}/*").matches(url) for d in domains):
        return
    host = target.host if target is not None else url
    raise DomainNotAllowed(
        f"{host!r} is not in tenant {tenant!r}'s addon allowlist",
        [{"field": "url", "reason": f"allowed: {', '.join(domains)}"}],
    )


_EXAMPLE = {"tenant": "admin", "domains": ["example.com", "*.example.org"]}


@router.get(
    "/allowlist",
    responses=success(200, _EXAMPLE, description="The caller's tenant's allowlist."),
)
async def read_allowlist(
    caller: Annotated[Caller, Depends(require("addons:read"))], state: State
) -> dict[str, object]:
    """The domains `resolve` answers for this tenant (empty: all)."""
    return {"tenant": caller.tenant, "domains": await allowed_domains(state.redis, caller.tenant)}


@router.put(
    "/allowlist",
    responses=success(200, _EXAMPLE, description="Stored.") | responses(422),
)
async def write_allowlist(body: Allowlist, caller: AdminCaller, state: State) -> dict[str, object]:
    """Replace this tenant's allowlist (scope `admin`); an empty list allows every domain."""
    await state.redis.set(domains_key(caller.tenant), json.dumps(body.domains))
    return {"tenant": caller.tenant, "domains": body.domains}
