"""Addon serving: the index the extension registers from, and each addon's source.

Sources are served from memory with a strong ETag (sha256 of the bytes), `Last-Modified` and
`Cache-Control: no-cache` (cache, but revalidate), so a refresh costs a 304.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response

from addons.registry import Addon
from controller.auth import AddonCallerDep
from controller.state import State
from semantest.errors import AddonNotFound

router = APIRouter(prefix="/addons", tags=["addons"])


def describe(addon: Addon) -> dict[str, Any]:
    """An addon's index entry (what the extension registers)."""
    m = addon.manifest
    return {
        "id": m.id,
        "name": m.name,
        "version": m.version,
        "matches": m.matches,
        "excludeMatches": m.exclude_matches,
        "world": m.world,
        "runAt": m.run_at,
        "channel": m.channel,
        "etag": addon.etag,
        "integrity": addon.integrity,
        "url": f"/api/v1/addons/{m.id}",
    }


@router.get("")
async def index(_caller: AddonCallerDep, state: State) -> dict[str, list[dict[str, Any]]]:
    """Every addon: ids, versions, match patterns, hashes."""
    return {"addons": [describe(a) for a in state.registry.all()]}


def not_modified(request: Request, addon: Addon) -> bool:
    """RFC 9110 §13.1: If-None-Match decides when present; else If-Modified-Since."""
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return "*" in tags or addon.etag in tags
    ims = request.headers.get("if-modified-since")
    if ims is not None:
        try:
            return parsedate_to_datetime(ims) >= parsedate_to_datetime(addon.last_modified)
        except (TypeError, ValueError):
            return False
    return False


@router.get("/{addon_id}", response_class=Response)
async def source(
    addon_id: str,
    request: Request,
    _caller: AddonCallerDep,
    state: State,
    version: str | None = Query(default=None, max_length=64, description="pin a version"),
) -> Response:
    """The addon's JavaScript; `?version=` must name the version served (others 404)."""
    addon = state.registry.get(addon_id)
    if version is not None and version != addon.manifest.version:
        raise AddonNotFound(f"no version {version!r} of addon {addon_id!r}")
    headers = {
        "ETag": addon.etag,
        "Last-Modified": addon.last_modified,
        "Cache-Control": "no-cache",
        "X-Addon-Version": addon.manifest.version,
        "X-Addon-Integrity": addon.integrity,
    }
    if not_modified(request, addon):
        return Response(status_code=304, headers=headers)
    return Response(addon.source, media_type="text/javascript; charset=utf-8", headers=headers)
