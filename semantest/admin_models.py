"""The admin API's contract: request and answer bodies of `/api/v1/admin/keys` and
`/api/v1/admin/tenants`, shared by the controller and `semantest keys`.

No answer carries a whole key (except the one that makes it, once) or a key's hash; a tenant's
webhook secret comes only in the answer that made or rotated it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from semantest.api_keys import DEFAULT_SCOPES, PREFIX_PATTERN, ApiKeyRecord, Scope
from semantest.chat_models import WebhookUrl
from semantest.models import CamelModel
from semantest.tenants import Plan, Tenant, TenantName


class KeyRequest(CamelModel):
    """Body of `POST /api/v1/admin/keys`: a new key for a tenant (made with it if new)."""

    tenant: TenantName = Field(description="The tenant the key works for; created if new.")
    plan: Plan | None = Field(
        default=None,
        description="A new tenant's plan (default `standard`). For an existing tenant it must "
        "be the tenant's plan (change that with `PUT /api/v1/admin/tenants/{tenant}`).",
    )
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=5)] | None = Field(
        default=None, description=f"Default: {' '.join(DEFAULT_SCOPES)}."
    )


class KeyInfo(CamelModel):
    """A key as the admin API shows it: its prefix, never the key or its hash."""

    prefix: str = Field(pattern=PREFIX_PATTERN)
    tenant: TenantName
    plan: Plan = Field(description="The tenant's plan.")
    scopes: list[Scope]
    created_at: float
    revoked: bool = False
    revoked_at: float | None = None

    @classmethod
    def of(cls, record: ApiKeyRecord, plan: Plan) -> KeyInfo:
        """What to show of a stored key, on its tenant's `plan`."""
        return cls(plan=plan, **record.model_dump())


class KeyCreated(KeyInfo):
    """Answer of `POST /api/v1/admin/keys`: the key, shown this once."""

    key: str = Field(description="The key. Shown once: only its sha256 is stored.")
    webhook_secret: str | None = Field(
        default=None,
        description="The tenant's webhook signing secret, only when this key made the tenant.",
    )


class KeyList(CamelModel):
    """Answer of `GET /api/v1/admin/keys`, oldest first."""

    keys: list[KeyInfo]


class TenantChange(CamelModel):
    """Body of `PUT /api/v1/admin/tenants/{tenant}`: the fields to change (absent: kept)."""

    plan: Plan | None = None
    webhook_url: WebhookUrl | None = Field(
        default=None, description="Default webhook URL of the tenant's jobs; `null` clears it."
    )


class TenantInfo(CamelModel):
    """A tenant as the admin API shows it (never its webhook secret)."""

    name: TenantName
    plan: Plan
    webhook_url: str | None = None
    created_at: float

    @classmethod
    def of(cls, tenant: Tenant) -> TenantInfo:
        """What to show of a stored tenant."""
        return cls(
            name=tenant.name,
            plan=tenant.plan,
            webhook_url=tenant.webhook_url,
            created_at=tenant.created_at,
        )


class WebhookSecret(CamelModel):
    """Answer of `POST /api/v1/admin/tenants/{tenant}/webhook-secret`: shown this once."""

    tenant: TenantName
    webhook_secret: str
