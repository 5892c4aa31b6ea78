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
from controller.openapi import responses, success
from controller.ratelimit import LimitedRoute, limit, rate_limited
from controller.state import State
from semantest.errors import AddonNotFound
from semantest.plans import Endpoint

router = APIRouter(prefix="/addons", tags=["addons"], route_class=LimitedRoute)

#: `/openapi.json` examples: the sandbox addon as this build serves it.
_ETAG = '"2cf87e9c351718de5eb83cf2429595c7f6053f3e37095286007dec99ef61455b"'
_INTEGRITY = "sha384-UEwkd93Jyb3EpVUZ0e4n9g/+89r3l0cXqCbUwlLFV8zRmUbp4jmQmApBrt0mEU2Q"
_INDEX_EXAMPLE = {
    "addons": [
        {
            "id": "sandbox",
            "name": "Sandbox image chat",
            "version": "0.1.0",
            "matches": ["http://127.0.0.1/chat*", "http://localhost/chat*"],
            "excludeMatches": [],
            "world": "USER_SCRIPT",
            "runAt": "document_idle",
            "channel": "stable",
            "etag": _ETAG,
            "integrity": _INTEGRITY,
            "url": "/api/v1/addons/sandbox",
        }
    ]
}
_SOURCE_HEADERS = {
    name: {"description": description, "required": True, "schema": {"type": "string"}}
    for name, description in (
        ("ETag", "Strong: the sha256 of the source."),
        ("Last-Modified", "When the source file last changed."),
        ("Cache-Control", "`no-cache`: cache, but revalidate."),
        ("X-Addon-Version", "The manifest's version."),
        ("X-Addon-Integrity", "Subresource-integrity hash of the source."),
    )
}
_SOURCE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The addon's JavaScript.",
        "headers": _SOURCE_HEADERS,
        "content": {
            "text/javascript": {
                "schema": {"type": "string"},
                "example": "export default { async detectState() { return 'ready' } /* ... */ }",
            }
        },
    },
    304: {
        "description": "`If-None-Match` (or else `If-Modified-Since`) matched: not modified.",
        "headers": _SOURCE_HEADERS,
    },
}
_CONDITIONAL_HEADERS = {
    "parameters": [
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "example": _ETAG,
            "description": "ETags the caller holds (`*` matches any); decides when present.",
        },
        {
            "name": "If-Modified-Since",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "example": "Wed, 25 Nov 2026 14:37:13 GMT",
            "description": "An HTTP date; used only without `If-None-Match`.",
        },
    ]
}


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


@router.get(
    "",
    responses=success(200, _INDEX_EXAMPLE, description="Every addon.") | rate_limited(),
    dependencies=[limit(Endpoint.ADDONS)],
)
async def index(_caller: AddonCallerDep, state: State) -> dict[str, list[dict[str, Any]]]:
    """Every addon: ids, versions, match patterns, hashes."""
    return {"addons": [describe(a) for a in state.registry.all()]}


def not_modified(request: Request, addon: Addon) -> bool:
    """RFC 9110 (section 13.1): If-None-Match decides when present; else If-Modified-Since."""
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


@router.get(
    "/{addon_id}",
    response_class=Response,
    responses=_SOURCE_RESPONSES | responses(404, example_code="ADDON_NOT_FOUND") | rate_limited(),
    openapi_extra=_CONDITIONAL_HEADERS,
    dependencies=[limit(Endpoint.ADDONS)],
)
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
