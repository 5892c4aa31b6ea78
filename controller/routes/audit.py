"""`GET /api/v1/admin/audit`: the audit log, newest first, for admins."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from redis.exceptions import ResponseError

from controller.auth import AdminCaller
from controller.openapi import responses, success
from controller.state import State
from semantest import keys
from semantest.errors import ValidationError
from semantest.models import CamelModel

router = APIRouter(tags=["admin"])

_EXAMPLE = {
    "entries": [
        {
            "id": "1795628697002-0",
            "at": 1795628697.0026875,
            "tenant": "acme",
            "keyId": "sk_3f9a1c2e",
            "ip": "203.0.113.7",
            "requestId": "d7538ccf7bf44543ab6dd4b2cbe0eb03",
            "method": "POST",
            "route": "/api/v1/jobs/{job_id}/cancel",
            "targets": {"job_id": "e3060f9f5c81497ca9c40c18793440ad"},
            "status": 409,
            "outcome": "refused",
            "error": "CONFLICT",
        }
    ],
    "nextCursor": None,
}


class AuditPage(CamelModel):
    """Audit entries, newest first; pass `nextCursor` as `cursor` for older ones."""

    entries: list[dict[str, Any]]
    next_cursor: str | None = None


@router.get(
    "/admin/audit",
    response_model=AuditPage,
    response_model_by_alias=True,
    responses=success(200, _EXAMPLE) | responses(401, 403, 422),
)
async def audit_log(
    caller: AdminCaller,
    state: State,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    key_id: Annotated[str | None, Query(alias="keyId", max_length=64)] = None,
    outcome: Annotated[str | None, Query(pattern="^(ok|refused|error)$")] = None,
    since: Annotated[float | None, Query(ge=0, le=1e11, description="Unix seconds.")] = None,
    until: Annotated[float | None, Query(ge=0, le=1e11, description="Unix seconds.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^\d+-\d+$")] = None,
) -> AuditPage:
    """Who did what and how it ended: every authenticated write (submit, cancel, key changes,
    publishing, admin actions), filtered by tenant, key, outcome and time."""
    if since is not None and until is not None and since > until:
        raise ValidationError("since is after until", [{"field": "since", "reason": "> until"}])
    top = f"({cursor}" if cursor else (str(int(until * 1000)) if until is not None else "+")
    bottom = f"{int(since * 1000)}-0" if since else "-"
    found: list[dict[str, Any]] = []
    last: str | None = None
    while len(found) < limit:
        try:
            batch = await state.redis.xrevrange(keys.AUDIT, top, bottom, count=200)
        except ResponseError:  # an empty interval Redis refuses to read (e.g. before 0-0)
            batch = []
        if not batch:
            last = None
            break
        for entry_id, fields in batch:
            last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            if not fields:
                continue
            entry = json.loads(fields[b"entry"])
            if (
                (tenant is None or entry["tenant"] == tenant)
                and (key_id is None or entry["keyId"] == key_id)
                and (outcome is None or entry["outcome"] == outcome)
            ):
                found.append({"id": last, **entry})
                if len(found) == limit:
                    break
        if len(batch) < 200 and len(found) < limit:
            last = None
            break
        top = f"({last}"
    return AuditPage(entries=found, next_cursor=last if len(found) == limit else None)
