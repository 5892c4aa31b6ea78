"""Tenants and API keys for admins: make, list and revoke keys; change a tenant; rotate its
webhook secret. Every route takes the `admin` scope.

A key is shown once, in the answer that makes it; lists name keys by their prefix. A tenant is
made with its first key, and its webhook secret is shown then and on rotation only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from controller.audit import audit_targets
from controller.auth import AdminCaller, authority_of
from controller.openapi import responses, success
from controller.state import AppState, State
from semantest.admin_models import (
    KeyCreated,
    KeyInfo,
    KeyList,
    KeyRequest,
    TenantChange,
    TenantInfo,
    WebhookSecret,
)
from semantest.api_keys import DEFAULT_SCOPES, PREFIX_PATTERN, ApiKeyRecord, KeyStore
from semantest.errors import Conflict, NotFound
from semantest.tenants import (
    ADMIN_TENANT,
    KEEP,
    TENANT_PATTERN,
    Plan,
    Tenant,
    TenantStore,
    new_webhook_secret,
)


class SharedPathRoute(APIRoute):
    """A route whose 405 names every method of its path.

    Starlette answers a method no route of a path takes with the `Allow` of the path's first
    route only; here `GET` and `POST /admin/keys` (and `GET` and `PUT` of a tenant) share paths.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            routes = getattr(scope.get("router"), "routes", [self])
            allowed = {
                method
                for route in routes
                if isinstance(route, APIRoute) and route.path_format == self.path_format
                for method in route.methods or ()
            }
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(sorted(allowed))})
        await super().handle(scope, receive, send)


router = APIRouter(prefix="/admin", tags=["admin"], route_class=SharedPathRoute)

TenantPath = Annotated[str, Path(pattern=TENANT_PATTERN, description="The tenant's name.")]
PrefixPath = Annotated[str, Path(pattern=PREFIX_PATTERN, description="The key's prefix.")]

#: `/openapi.json` examples, built from the models so they validate.
_RECORD = ApiKeyRecord(
    prefix="sk_4bX9qTzL",
    tenant="acme",
    scopes=list(DEFAULT_SCOPES),
    created_at=1764081600.0,
)
_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - an example
_CREATED = KeyCreated(
    key="sk_4bX9qTzL" + "x" * 32,
    webhook_secret=_SECRET,
    **KeyInfo.of(_RECORD, Plan.STANDARD).model_dump(),
).model_dump(mode="json", by_alias=True)
_REVOKED = KeyInfo.of(_RECORD, Plan.STANDARD).model_copy(
    update={"revoked": True, "revoked_at": 1764085200.0}
)
_LIST = KeyList(keys=[KeyInfo.of(_RECORD, Plan.STANDARD), _REVOKED]).model_dump(
    mode="json", by_alias=True
)
_TENANT = TenantInfo(
    name="acme",
    plan=Plan.PARTNER,
    webhook_url="https://acme.example/hooks",
    created_at=1764081600.0,
).model_dump(mode="json", by_alias=True)
_ROTATED = WebhookSecret(tenant="acme", webhook_secret=_SECRET).model_dump(
    mode="json", by_alias=True
)


def _tenants(state: AppState) -> TenantStore:
    return TenantStore(state.redis)


def _keys(state: AppState) -> KeyStore:
    return KeyStore(state.redis)


async def _tenant(state: AppState, name: str) -> Tenant:
    found = await _tenants(state).get(name)
    if found is None:
        raise NotFound(f"no tenant {name!r}", [{"field": "tenant", "reason": "unknown"}])
    return found


@router.post(
    "/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    response_model_by_alias=True,
    response_model_exclude_none=True,
    responses=success(201, _CREATED, description="The key, shown once.")
    | responses(401, 403, 409, 422),
)
async def create_key(
    body: KeyRequest, caller: AdminCaller, state: State, request: Request
) -> KeyCreated:
    """Make an API key for a tenant, making the tenant too when it is new.

    The answer holds the key (only its sha256 is stored: it is never shown again) and, for a
    new tenant, its webhook signing secret. A `plan` that differs from an existing tenant's is
    409 `CONFLICT`: change the tenant's plan with `PUT /api/v1/admin/tenants/{tenant}`.
    """
    if body.tenant == ADMIN_TENANT:
        await authority_of(request, state).ensure_admin_tenant()
    tenant, created = await _tenants(state).ensure(body.tenant, body.plan)
    if body.plan is not None and body.plan is not tenant.plan:
        raise Conflict(
            f"tenant {tenant.name!r} is on plan {tenant.plan.value}, not {body.plan.value}: "
            f"change it with PUT /api/v1/admin/tenants/{tenant.name}",
            [{"field": "plan", "reason": f"the tenant's plan is {tenant.plan.value}"}],
        )
    key, record = await _keys(state).create(tenant.name, body.scopes or DEFAULT_SCOPES)
    audit_targets(request, prefix=record.prefix, tenant=tenant.name)
    return KeyCreated(
        key=key,
        webhook_secret=tenant.webhook_secret if created else None,
        **KeyInfo.of(record, tenant.plan).model_dump(),
    )


@router.get(
    "/keys",
    response_model=KeyList,
    response_model_by_alias=True,
    responses=success(200, _LIST, description="Every key, oldest first.")
    | responses(401, 403, 422),
)
async def list_keys(
    caller: AdminCaller,
    state: State,
    tenant: Annotated[str | None, Query(pattern=TENANT_PATTERN)] = None,
) -> KeyList:
    """Every key (of `tenant` only, when given), revoked ones included: prefixes, tenants,
    plans, scopes; never a key or its hash."""
    records = await _keys(state).all(tenant)
    plans: dict[str, Plan] = {}
    for name in {r.tenant for r in records}:
        found = await _tenants(state).get(name)
        plans[name] = found.plan if found is not None else Plan.STANDARD
    return KeyList(keys=[KeyInfo.of(r, plans[r.tenant]) for r in records])


@router.delete(
    "/keys/{prefix}",
    response_model=KeyInfo,
    response_model_by_alias=True,
    responses=success(200, _REVOKED.model_dump(mode="json", by_alias=True), description="Revoked.")
    | responses(401, 403, 404, 422),
)
async def revoke_key(prefix: PrefixPath, caller: AdminCaller, state: State) -> KeyInfo:
    """Revoke a key: it is refused (401) within a second on every controller process.
    Revoking it again changes nothing; the key stays in the list, flagged."""
    record = await _keys(state).revoke(prefix)
    found = await _tenants(state).get(record.tenant)
    return KeyInfo.of(record, found.plan if found is not None else Plan.STANDARD)


@router.get(
    "/tenants/{tenant}",
    response_model=TenantInfo,
    response_model_by_alias=True,
    responses=success(200, _TENANT, description="The tenant.") | responses(401, 403, 404, 422),
)
async def get_tenant(tenant: TenantPath, caller: AdminCaller, state: State) -> TenantInfo:
    """A tenant's plan, default webhook URL and creation time (never its webhook secret)."""
    return TenantInfo.of(await _tenant(state, tenant))


@router.put(
    "/tenants/{tenant}",
    response_model=TenantInfo,
    response_model_by_alias=True,
    responses=success(200, _TENANT, description="The tenant after the change.")
    | responses(401, 403, 404, 422),
)
async def change_tenant(
    tenant: TenantPath, body: TenantChange, caller: AdminCaller, state: State
) -> TenantInfo:
    """Change a tenant's plan and default webhook URL; a field left out is kept, a
    `webhookUrl` of `null` clears it. Callers see a new plan within a second."""
    await _tenant(state, tenant)
    given = body.model_fields_set
    plan = body.plan if "plan" in given and body.plan is not None else KEEP
    url = body.webhook_url if "webhook_url" in given else KEEP
    return TenantInfo.of(await _tenants(state).update(tenant, plan=plan, webhook_url=url))


@router.post(
    "/tenants/{tenant}/webhook-secret",
    response_model=WebhookSecret,
    response_model_by_alias=True,
    responses=success(200, _ROTATED, description="The new secret, shown once.")
    | responses(401, 403, 404, 409, 422),
)
async def rotate_webhook_secret(
    tenant: TenantPath, caller: AdminCaller, state: State
) -> WebhookSecret:
    """Give the tenant a new webhook signing secret; webhooks are signed with it from now on.
    The tenant `admin`'s secret is `SEMANTEST_WEBHOOK_SECRET` when that is set (409 here)."""
    await _tenant(state, tenant)
    if tenant == ADMIN_TENANT and state.settings.webhook_secret is not None:
        raise Conflict(
            "the admin tenant's webhook secret is SEMANTEST_WEBHOOK_SECRET: change the setting"
        )
    secret = new_webhook_secret()
    await _tenants(state).update(tenant, webhook_secret=secret)
    return WebhookSecret(tenant=tenant, webhook_secret=secret)
