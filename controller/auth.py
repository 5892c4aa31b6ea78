"""Who is calling: API keys from `Authorization: Bearer <key>` or `X-API-Key`.

Keys are compared by their sha256 (constant time), so the controller never holds one in clear
after start-up. For now the only key is the bootstrap `SEMANTEST_ADMIN_KEY` of tenant `admin`;
per-tenant keys, scopes and JWTs plug in here.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from controller.state import State, hash_key
from semantest.errors import Unauthorized

#: Every scope a key or token can carry.
SCOPES = frozenset({"jobs:write", "jobs:read", "addons:read", "addons:publish", "admin"})


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: whose data it sees, which key or token, its plan and scopes."""

    tenant: str
    #: The key's visible prefix (never the key), `jwt:<jti or sub>` for a token.
    key_id: str = "bootstrap"
    #: Rate-limit plan of the tenant (`standard`, `partner`).
    plan: str = "partner"
    scopes: frozenset[str] = SCOPES


def presented_key(request: Request) -> str | None:
    """The API key the request carries, if any."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return request.headers.get("x-api-key") or None


def authenticate(request: Request, state: State) -> Caller:
    """Resolve the caller or raise 401 (FastAPI dependency)."""
    key = presented_key(request)
    if key is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    digest = hash_key(key)
    for known, tenant in state.key_hashes.items():
        if hmac.compare_digest(known, digest):
            return remember(request, Caller(tenant=tenant))
    raise Unauthorized("unknown API key")


def remember(request: Request, caller: Caller) -> Caller:
    """Keep the caller on the request, for the audit log (controller/audit.py)."""
    request.state.caller = caller
    return caller


def authenticate_addons(request: Request, state: State) -> Caller | None:
    """Addon GETs are public unless `SEMANTEST_ADDONS_PUBLIC=false`."""
    if state.settings.addons_public:
        return None
    return authenticate(request, state)


CallerDep = Annotated[Caller, Depends(authenticate)]
AddonCallerDep = Annotated[Caller | None, Depends(authenticate_addons)]
