"""Who is calling, and whether they may: a credential in, a `Caller` with its scopes out.

A request carries `Authorization: Bearer <credential>` or `X-API-Key: <key>`. A credential
with two dots is a JWT (`controller/tokens.py` checks it): its `sub` is the tenant, its `scope`
claim the scopes, and its plan is the tenant record's (`standard` when there is none). Anything
else is an API key, compared by its sha256: the bootstrap `SEMANTEST_ADMIN_KEY` in memory
(tenant `admin`, every scope, partner plan), every other key in Redis
(`semantest/api_keys.py`), its plan its tenant's (`semantest/tenants.py`). Unknown, revoked,
expired or forged: 401 `UNAUTHORIZED`, saying which.

Key lookups are cached in the process for `CACHE_TTL_S` (under a second), so a revoked key or a
changed plan takes effect within that on every controller process.

Routes say what they need with `require(scope)`, through the aliases below (`JobsWrite`,
`JobsRead`, `AdminCaller`, ...): a known caller without the scope gets 403 `FORBIDDEN` naming
it. The addon GETs take `addons:read` when they are not public.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Request
from redis.exceptions import RedisError

from controller.state import AppState, State
from controller.tokens import TokenVerifier, looks_like_jwt
from semantest.api_keys import SCOPES, ApiKeyRecord, KeyStore, key_digest
from semantest.errors import Forbidden, Unauthorized
from semantest.tenants import ADMIN_TENANT, TENANT_PATTERN, Plan, TenantStore

__all__ = ["SCOPES", "Authority", "Caller", "authenticate", "require"]

log = logging.getLogger(__name__)

#: How long (seconds) a key lookup or a tenant's plan is trusted in-process; a revoked key is
#: refused within this on every controller process.
CACHE_TTL_S = 0.5
#: Entries a cache holds at most (it is emptied when full: it only saves round trips).
CACHE_MAX = 10_000
_TENANT_NAME = re.compile(TENANT_PATTERN)
V = TypeVar("V")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: whose data it sees, which key or token, its plan and scopes."""

    tenant: str
    #: The key's visible prefix (never the key), `jwt:<jti or sub>` for a token.
    key_id: str = "bootstrap"
    #: Rate-limit plan of the tenant (`standard`, `partner`).
    plan: str = "partner"
    scopes: frozenset[str] = SCOPES


class _Miss:
    """What `_Expiring.get` answers for a key it does not hold (now)."""


MISS = _Miss()


class _Expiring(Generic[V]):
    """A small map whose entries live `CACHE_TTL_S`."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, V]] = {}

    def get(self, key: str) -> V | _Miss:
        found = self._entries.get(key)
        if found is None or found[0] < time.monotonic():
            return MISS
        return found[1]

    def put(self, key: str, value: V) -> None:
        if len(self._entries) >= CACHE_MAX:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + CACHE_TTL_S, value)


class Authority:
    """Turns credentials into callers for one controller process (`authority_of`)."""

    def __init__(self, state: AppState) -> None:
        self.settings = state.settings
        #: sha256 → tenant of the keys given in settings (the bootstrap admin key).
        self.bootstrap = state.key_hashes
        self.keys = KeyStore(state.redis)
        self.tenants = TenantStore(state.redis)
        self.tokens = TokenVerifier(state.settings)
        #: key digest → its record (None: no such key).
        self._records: _Expiring[ApiKeyRecord | None] = _Expiring()
        self._plans: _Expiring[str] = _Expiring()
        self._admin_ready = False

    async def caller(self, credential: str) -> Caller:
        """The caller a credential stands for; `Unauthorized` saying why when none."""
        if not self._admin_ready:
            try:
                await self.ensure_admin_tenant()
            except (RedisError, OSError) as exc:  # tried again on the next request
                log.warning("tenant %s not stored yet (Redis: %r)", ADMIN_TENANT, exc)
        if looks_like_jwt(credential):
            return await self._from_token(credential)
        digest = key_digest(credential)
        for known, tenant in self.bootstrap.items():
            if hmac.compare_digest(known, digest):
                return Caller(tenant=tenant)
        record = self._records.get(digest)
        if isinstance(record, _Miss):
            record = await self.keys.lookup(credential)
            self._records.put(digest, record)
        if record is None:
            raise Unauthorized("unknown API key")
        if record.revoked:
            raise Unauthorized(f"API key {record.prefix} was revoked")
        return Caller(
            tenant=record.tenant,
            key_id=record.prefix,
            plan=await self.plan_of(record.tenant),
            scopes=frozenset(record.scopes),
        )

    async def _from_token(self, token: str) -> Caller:
        claims = self.tokens.verify(token)
        if _TENANT_NAME.fullmatch(claims.subject) is None:
            raise Unauthorized(
                f"invalid token: sub {claims.subject[:80]!r} is not a tenant name",
                [{"field": "authorization", "reason": f"sub must match {TENANT_PATTERN}"}],
            )
        return Caller(
            tenant=claims.subject,
            key_id=f"jwt:{claims.token_id or claims.subject}",
            plan=await self.plan_of(claims.subject),
            scopes=claims.scopes & SCOPES,
        )

    async def plan_of(self, tenant: str) -> str:
        """The tenant's plan (its record's; `standard` without one), cached briefly."""
        plan = self._plans.get(tenant)
        if isinstance(plan, _Miss):
            record = await self.tenants.get(tenant)
            plan = (record.plan if record is not None else Plan.STANDARD).value
            self._plans.put(tenant, plan)
        return plan

    async def ensure_admin_tenant(self) -> None:
        """Store the bootstrap tenant `admin` (partner plan) when missing, with
        `SEMANTEST_WEBHOOK_SECRET` as its webhook secret when that is set."""
        wanted = self.settings.webhook_secret
        secret = wanted.get_secret_value() if wanted is not None else None
        tenant, _created = await self.tenants.ensure(ADMIN_TENANT, Plan.PARTNER, secret)
        if secret is not None and tenant.webhook_secret != secret:
            await self.tenants.update(ADMIN_TENANT, webhook_secret=secret)
        self._admin_ready = True


def authority_of(request: Request, state: AppState) -> Authority:
    """The app's authority, built on first use from its state."""
    found: Authority | None = getattr(request.app.state, "authority", None)
    if found is None:
        found = Authority(state)
        request.app.state.authority = found
    return found


def presented_key(request: Request) -> str | None:
    """The credential (API key or JWT) the request carries, if any."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return request.headers.get("x-api-key") or None


async def authenticate(request: Request, state: State) -> Caller:
    """Resolve the caller or raise 401 (FastAPI dependency)."""
    credential = presented_key(request)
    if credential is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    return remember(request, await authority_of(request, state).caller(credential))


def remember(request: Request, caller: Caller) -> Caller:
    """Keep the caller on the request, for the audit log (controller/audit.py)."""
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]


def forbidden(caller: Caller, scope: str) -> Forbidden:
    """The 403 for a caller without `scope`."""
    return Forbidden(
        f"this {'token' if caller.key_id.startswith('jwt:') else 'key'} lacks the scope {scope}",
        [{"field": "scope", "reason": f"needs {scope}"}],
    )


def require(scope: str) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency: the authenticated caller, or 403 when it lacks `scope`."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r} (known: {', '.join(sorted(SCOPES))})")

    async def scoped(caller: CallerDep) -> Caller:
        if scope not in caller.scopes:
            raise forbidden(caller, scope)
        return caller

    scoped.__name__ = f"require_{scope.replace(':', '_')}"
    scoped.required_scope = scope  # type: ignore[attr-defined]  # for the OpenAPI document
    return scoped


JobsWrite = Annotated[Caller, Depends(require("jobs:write"))]
JobsRead = Annotated[Caller, Depends(require("jobs:read"))]
AddonsPublish = Annotated[Caller, Depends(require("addons:publish"))]
AdminCaller = Annotated[Caller, Depends(require("admin"))]


async def authenticate_addons(request: Request, state: State) -> Caller | None:
    """Addon GETs are public unless `SEMANTEST_ADDONS_PUBLIC=false`; then they take
    `addons:read`."""
    if state.settings.addons_public:
        return None
    caller = await authenticate(request, state)
    if "addons:read" not in caller.scopes:
        raise forbidden(caller, "addons:read")
    return caller


AddonCallerDep = Annotated[Caller | None, Depends(authenticate_addons)]
#: The addon GETs' caller, by the scope they take when not public.
AddonsRead = AddonCallerDep
