"""Publishing addons: immutable versions, the `stable`/`beta` channels, promote and rollback.

`PUT /addons/{addonId}/versions/{version}` (scope `addons:publish`) stores a version and makes
it current on its manifest's channel; the same bytes again answer 200 and change nothing,
other bytes under a stored version 409. A bad manifest, a missing or unlisted file, a JS
syntax error (file, line, column) or an unresolvable dependency is 422 naming the field.
Everything is stored in Redis (`addons.store`) and survives a restart; every controller
process serves it within a fraction of a second.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from semantic_version import Version as SemVer

from addons.js_syntax import check_syntax
from addons.manifest import ADDON_ID, Channel, validate_manifest
from addons.registry import AddonVersion, Registry, describe
from addons.store import Catalog
from controller.auth import AddonsPublish, Caller, require
from controller.openapi import responses, success
from controller.ratelimit import LimitedRoute, RateLimit
from semantest.errors import ValidationError
from semantest.plans import Endpoint

router = APIRouter(route_class=LimitedRoute)

AddonId = Annotated[str, Path(pattern=ADDON_ID, max_length=64)]
Version = Annotated[str, Path(min_length=1, max_length=64)]
#: Publishing counts against the tenant's addon bucket.
_LIMIT = [Depends(RateLimit(Endpoint.ADDONS))]
_FILE_MAX = 512 * 1024


class PublishRequest(BaseModel):
    """A version to publish: its manifest and the text of every file it lists."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "manifest": {
                    "id": "hello",
                    "name": "Hello",
                    "version": "1.0.0",
                    "matches": ["https://example.com/*"],
                    "js": ["driver.js"],
                },
                "files": {"driver.js": "console.log('hello');\n"},
            }
        },
    )

    manifest: dict[str, Any]
    files: dict[str, Annotated[str, Field(max_length=_FILE_MAX)]] = Field(max_length=32)


class PromoteRequest(BaseModel):
    """Make a published version current on a channel."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"version": "1.0.0", "channel": "stable"}}
    )

    version: Annotated[str, Field(min_length=1, max_length=64)]
    channel: Channel


class RollbackRequest(BaseModel):
    """Move a channel back to its previous version."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"channel": "stable"}})

    channel: Channel


def catalog_of(request: Request) -> Catalog:
    """This process's catalog."""
    found: Catalog = request.app.state.addon_catalog
    return found


def channels_of(registry: Registry, addon_id: str) -> dict[str, str | None]:
    """Which version each channel serves for an addon."""
    out: dict[str, str | None] = {}
    for channel in ("stable", "beta"):
        current = {s.addon.id: s.addon.version for s in registry.current(channel)}
        out[channel] = current.get(addon_id)
    return out


def build_version(addon_id: str, version: str, body: PublishRequest) -> AddonVersion:
    """The version a publish request describes, every problem a 422 naming its field."""
    manifest = validate_manifest(body.manifest, "manifest", prefix="manifest.")
    for field, wanted, got in (
        ("id", addon_id, manifest.id),
        ("version", version, manifest.version),
    ):
        if wanted != got:
            raise ValidationError(
                f"manifest.{field} {got!r} differs from the URL's {wanted!r}",
                [{"field": f"manifest.{field}", "reason": f"must be {wanted!r}"}],
            )
    details = [
        {"field": f"files.{name}", "reason": "listed in manifest.js but not sent"}
        for name in manifest.js
        if name not in body.files
    ] + [
        {"field": f"files.{name}", "reason": "not listed in manifest.js"}
        for name in body.files
        if name not in manifest.js
    ]
    if details:
        raise ValidationError(f"{details[0]['field']}: {details[0]['reason']}", details)
    files: list[tuple[str, bytes]] = []
    for name in manifest.js:
        data = body.files[name].encode()
        problem = check_syntax(data)
        if problem is not None:
            raise ValidationError(
                f"{name}: JavaScript syntax error at {problem}",
                [{"field": f"files.{name}", "reason": f"syntax error at {problem}"}],
            )
        files.append((name, data))
    return AddonVersion(manifest=manifest, files=tuple(files), modified=0.0, published=True)


_PUBLISHED = {
    "id": "hello",
    "version": "1.0.0",
    "created": True,
    "channels": {"stable": "1.0.0", "beta": "1.0.0"},
    "resolved": {},
    "addon": {"id": "hello", "version": "1.0.0", "hash": "…", "integrity": "sha384-…"},
}


@router.put(
    "/{addon_id}/versions/{version}",
    status_code=201,
    responses=success(201, _PUBLISHED, description="Published.")
    | success(200, {**_PUBLISHED, "created": False}, description="Already published, same bytes.")
    | responses(409, 422),
    dependencies=_LIMIT,
)
async def publish(
    addon_id: AddonId,
    version: Version,
    body: PublishRequest,
    request: Request,
    response: Response,
    _caller: AddonsPublish,
) -> dict[str, Any]:
    """Publish an immutable version (scope `addons:publish`); it becomes current on its
    manifest's channel."""
    catalog = catalog_of(request)
    result = await catalog.publish(build_version(addon_id, version, body))
    registry = catalog.registry
    served = registry.get(addon_id, version)
    if not result.created:
        response.status_code = 200
    return {
        "id": addon_id,
        "version": version,
        "created": result.created,
        "channels": channels_of(registry, addon_id),
        "resolved": dict(served.addon.resolved or ()),
        "addon": describe(served, served.manifest.channel),
    }


_CHANNELS = {"id": "hello", "channels": {"stable": "1.0.0", "beta": "1.1.0"}}


@router.post(
    "/{addon_id}/promote",
    responses=success(200, _CHANNELS, description="The channels now.")
    | responses(404, 422, example_code="ADDON_NOT_FOUND"),
    dependencies=_LIMIT,
)
async def promote(
    addon_id: AddonId, body: PromoteRequest, request: Request, _caller: AddonsPublish
) -> dict[str, Any]:
    """Make a published version current on a channel (scope `addons:publish`)."""
    registry = await catalog_of(request).promote(addon_id, body.version, body.channel)
    return {"id": addon_id, "channels": channels_of(registry, addon_id)}


@router.post(
    "/{addon_id}/rollback",
    responses=success(200, _CHANNELS, description="The channels now.")
    | responses(404, 409, 422, example_code="ADDON_NOT_FOUND"),
    dependencies=_LIMIT,
)
async def rollback(
    addon_id: AddonId, body: RollbackRequest, request: Request, _caller: AddonsPublish
) -> dict[str, Any]:
    """Move a channel back to the version it served before (scope `addons:publish`); 409 when
    it has no earlier one."""
    catalog = catalog_of(request)
    await catalog.rollback(addon_id, body.channel)
    return {"id": addon_id, "channels": channels_of(catalog.registry, addon_id)}


_VERSIONS = {
    "id": "hello",
    "channels": {"stable": "1.0.0", "beta": "1.1.0"},
    "history": {"stable": ["1.0.0"], "beta": ["1.0.0", "1.1.0"]},
    "versions": [{"version": "1.1.0", "published": True, "requires": {}, "resolved": {}}],
}


@router.get(
    "/{addon_id}/versions",
    responses=success(200, _VERSIONS, description="Versions and channels.")
    | responses(404, example_code="ADDON_NOT_FOUND"),
    dependencies=_LIMIT,
)
async def versions(
    addon_id: AddonId, request: Request, _caller: Annotated[Caller, Depends(require("addons:read"))]
) -> dict[str, Any]:
    """Every version of an addon, newest first, and each channel's version and history."""
    registry = catalog_of(request).registry
    found = registry.versions(addon_id)
    if not found:
        registry.get(addon_id)  # raises ADDON_NOT_FOUND
    ordered = sorted(found.values(), key=lambda v: SemVer(v.version), reverse=True)
    return {
        "id": addon_id,
        "channels": channels_of(registry, addon_id),
        "history": registry.histories.get(addon_id, {}),
        "versions": [
            {
                "version": v.version,
                "published": v.published,
                "requires": v.manifest.requires,
                "resolved": dict(v.resolved or ()),
            }
            for v in ordered
        ],
    }
