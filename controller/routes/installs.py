"""Extension installs: each reports what it runs; operators see which install runs what.

`POST /installs/heartbeat` is sent by the extension after every addon sync (public like the
addon GETs; with a key when `SEMANTEST_ADDONS_PUBLIC=false`). Installs are kept in one Redis
hash, `semantest:installs` (install id → JSON with `lastSeen`); one not seen for
`FORGET_AFTER_S` is dropped when the list is read. `GET /installs` takes `addons:publish`:
it is the authors' and operators' view of a rollout.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from controller.auth import AddonsPublish, Caller
from controller.openapi import success
from controller.ratelimit import LimitedRoute, limit
from controller.routes.addons import addon_reader
from controller.state import State
from semantest.plans import Endpoint

router = APIRouter(prefix="/installs", tags=["addons"], route_class=LimitedRoute)

INSTALLS = "semantest:installs"
#: An install silent this long (seconds) is forgotten.
FORGET_AFTER_S = 7 * 24 * 3600

Short = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class AddonRun(BaseModel):
    """One addon an install has registered."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Short
    version: Short
    integrity: Annotated[str, StringConstraints(max_length=128)] | None = None


class Refusal(BaseModel):
    """A bundle the install refused (its SRI did not match), or another sync problem."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Short
    version: Annotated[str, StringConstraints(max_length=128)] | None = None
    reason: Annotated[str, StringConstraints(max_length=500)]
    at: float | None = None


class Heartbeat(BaseModel):
    """What an install runs now."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        populate_by_name=True,
        json_schema_extra={
            "example": {
                "installId": "5f0c6c2e-2f7e-4d8b-9a59-0d4c3c1c9e11",
                "extensionVersion": "0.2.0",
                "channel": "stable",
                "userScripts": True,
                "addons": [{"id": "sandbox", "version": "0.2.0"}],
                "refused": [],
                "lastSync": "ok",
            }
        },
    )

    install_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")] = Field(
        alias="installId"
    )
    extension_version: Short = Field(alias="extensionVersion")
    channel: Short = "stable"
    user_scripts: bool = Field(default=True, alias="userScripts")
    addons: list[AddonRun] = Field(default_factory=list, max_length=100)
    refused: list[Refusal] = Field(default_factory=list, max_length=100)
    last_sync: Annotated[str, StringConstraints(max_length=500)] | None = Field(
        default=None, alias="lastSync"
    )


@router.post(
    "/heartbeat",
    responses=success(
        200, {"installId": "5f0c6c2e-2f7e-4d8b-9a59-0d4c3c1c9e11", "lastSeen": 1764100000.0}
    ),
    dependencies=[limit(Endpoint.ADDONS)],
)
async def heartbeat(
    body: Heartbeat, state: State, caller: Annotated[Caller | None, Depends(addon_reader)]
) -> dict[str, Any]:
    """Record what an install runs (its extension version, addon versions, refusals)."""
    record = body.model_dump(by_alias=True) | {
        "lastSeen": time.time(),
        "tenant": caller.tenant if caller is not None else None,
    }
    await state.redis.hset(INSTALLS, body.install_id, json.dumps(record))
    return {"installId": body.install_id, "lastSeen": record["lastSeen"]}


@router.get(
    "",
    responses=success(
        200,
        {
            "installs": [
                {
                    "installId": "5f0c6c2e-2f7e-4d8b-9a59-0d4c3c1c9e11",
                    "extensionVersion": "0.2.0",
                    "addons": [{"id": "sandbox", "version": "0.2.0"}],
                    "refused": [],
                    "lastSeen": 1764100000.0,
                }
            ]
        },
    ),
    dependencies=[limit(Endpoint.ADDONS)],
)
async def installs(state: State, _caller: AddonsPublish) -> dict[str, list[dict[str, Any]]]:
    """Every install seen in the last week and what it runs, most recent first."""
    raw = await state.redis.hgetall(INSTALLS)
    now, out, stale = time.time(), [], []
    for install_id, value in raw.items():
        record = json.loads(value)
        if now - float(record.get("lastSeen", 0)) > FORGET_AFTER_S:
            stale.append(install_id)
        else:
            out.append(record)
    if stale:
        await state.redis.hdel(INSTALLS, *stale)
    out.sort(key=lambda r: -float(r["lastSeen"]))
    return {"installs": out}
