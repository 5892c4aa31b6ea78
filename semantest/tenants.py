"""Tenants: who owns jobs, keys and images, on which plan, and where their webhooks go.

A tenant record is created with the tenant's first API key (`POST /api/v1/admin/keys`), or at
controller start for the bootstrap tenant `admin`. It holds the tenant's rate-limit plan, the
secret its webhooks are signed with (Standard Webhooks' `whsec_<base64>` form) and its default
webhook URL. Rate limits and webhook delivery read it with `TenantStore.get(name)`.

Records are JSON at `keys.tenant(name)`; changes are compare-and-set (WATCH/MULTI), so two
admins changing one tenant never lose a write.

Imports only the kernel (no controller, no agents).
"""

from __future__ import annotations

import base64
import secrets
import time
from enum import Enum
from typing import Annotated, Final

from pydantic import Field, StringConstraints
from redis.asyncio import Redis
from redis.exceptions import WatchError

from semantest import keys
from semantest.chat_models import WebhookUrl
from semantest.errors import Conflict, NotFound
from semantest.models import CamelModel

#: What a tenant may be called: it is a folder of image keys (`<tenant>/<sha256>.<ext>`, the
#: same rule as `semantest.storage`) and a part of Redis keys, so no `/`, `:` or upper case.
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
TenantName = Annotated[str, StringConstraints(pattern=TENANT_PATTERN)]
#: The bootstrap tenant of `SEMANTEST_ADMIN_KEY`.
ADMIN_TENANT = "admin"
#: Random bytes in a webhook secret (Standard Webhooks asks for 24 to 64).
WEBHOOK_SECRET_BYTES = 32


class Plan(str, Enum):
    """A tenant's rate-limit plan."""

    STANDARD = "standard"
    PARTNER = "partner"


class Tenant(CamelModel):
    """One tenant as stored (camelCase JSON)."""

    name: TenantName
    plan: Plan = Plan.STANDARD
    #: Signs the tenant's webhooks: `whsec_` + base64 of random bytes (Standard Webhooks).
    webhook_secret: str = Field(pattern=r"^whsec_[A-Za-z0-9+/]+={0,2}$")
    #: Where the tenant's job webhooks go when a request names none.
    webhook_url: WebhookUrl | None = None
    created_at: float = Field(default_factory=time.time)


def new_webhook_secret() -> str:
    """A fresh webhook secret in Standard Webhooks' `whsec_<base64>` form."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode()


class _Keep:
    """Marks an `update` argument that leaves the field as it is."""


KEEP: Final = _Keep()


class TenantStore:
    """Typed access to tenant records; one instance per Redis client."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, name: str) -> Tenant | None:
        """The tenant, or None when there is no record of it."""
        raw = await self.redis.get(keys.tenant(name))
        return None if raw is None else Tenant.model_validate_json(raw)

    async def create(
        self,
        name: str,
        plan: Plan = Plan.STANDARD,
        *,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> Tenant:
        """Store a new tenant (a fresh webhook secret unless one is given); `Conflict` if it
        exists."""
        tenant = Tenant(
            name=name,
            plan=plan,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret or new_webhook_secret(),
        )
        stored = await self.redis.set(keys.tenant(name), _dump(tenant), nx=True)
        if not stored:
            raise Conflict(f"tenant {name!r} exists")
        return tenant

    async def ensure(
        self, name: str, plan: Plan | None = None, webhook_secret: str | None = None
    ) -> tuple[Tenant, bool]:
        """The tenant, created on `plan` (default standard) when missing; and whether it was
        created just now (only one of two racing callers sees True)."""
        for _ in range(3):
            found = await self.get(name)
            if found is not None:
                return found, False
            try:
                tenant = await self.create(
                    name, plan or Plan.STANDARD, webhook_secret=webhook_secret
                )
                return tenant, True
            except Conflict:
                continue  # created meanwhile: read it
        raise Conflict(f"tenant {name!r} keeps changing; try again")

    async def update(
        self,
        name: str,
        *,
        plan: Plan | _Keep = KEEP,
        webhook_url: str | _Keep | None = KEEP,
        webhook_secret: str | _Keep = KEEP,
    ) -> Tenant:
        """Change the given fields atomically; the tenant as stored after. `NotFound` when
        there is no such tenant."""
        changes: dict[str, object] = {}
        if not isinstance(plan, _Keep):
            changes["plan"] = plan
        if not isinstance(webhook_url, _Keep):
            changes["webhook_url"] = webhook_url
        if not isinstance(webhook_secret, _Keep):
            changes["webhook_secret"] = webhook_secret
        key = keys.tenant(name)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise NotFound(
                            f"no tenant {name!r}", [{"field": "tenant", "reason": "unknown"}]
                        )
                    current = Tenant.model_validate_json(raw)
                    # validated again: a bad URL or secret is refused here, not stored
                    changed = Tenant.model_validate(current.model_dump() | changes)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, _dump(changed))
                    await pipe.execute()
                    return changed
                except WatchError:
                    continue


def _dump(tenant: Tenant) -> str:
    return tenant.model_dump_json(by_alias=True)
