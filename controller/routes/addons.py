"""Addon delivery: the index, each addon's bundle, content-addressed bundles and `resolve`.

Bodies and headers are prebuilt per registry snapshot (`controller.addon_delivery.Prebuilt`)
and every 200/304 is decided by `addon_delivery.answer`. Public GETs usually never reach these
routes: `AddonFastPath` answers them first with the same bytes; these routes answer the rest
(a key required, errors) and document the API. Publishing: `routes/addon_publish.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse

from addons.match import ParsedUrl
from addons.registry import describe
from addons.store import Catalog
from controller.addon_delivery import Headers, Prebuilt, answer, headers_for, lookup
from controller.auth import Caller, authenticate, forbidden, presented_key
from controller.metrics import route_template
from controller.openapi import responses, success
from controller.ratelimit import LimitedRoute, limit, rate_limited
from controller.routes import addon_domains, addon_publish
from controller.routes.addon_domains import check_domain
from controller.state import AppState, State
from semantest import providers
from semantest.errors import AddonNotFound, ValidationError
from semantest.metrics import ADDON_REQUESTS
from semantest.plans import Endpoint


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.semantest
    builtins = [v for by_version in state.registry.known().values() for v in by_version.values()]
    catalog = Catalog(state.redis, builtins)

    def rebuilt(registry: Any) -> None:
        state.registry = registry
        app.state.addon_prebuilt = Prebuilt(registry)
        providers.install(registry.providers())  # a new provider is accepted at once...
        app.openapi_schema = None  # ...and /openapi.json lists it

    catalog.on_change(rebuilt)
    rebuilt(catalog.registry)
    app.state.addon_catalog = catalog
    await catalog.start()
    try:
        yield
    finally:
        await catalog.stop()


router = APIRouter(prefix="/addons", tags=["addons"], route_class=LimitedRoute, lifespan=_lifespan)
# Before `/{addon_id}`: `GET /addons/allowlist` is a route, not an addon.
router.include_router(addon_domains.router)
router.include_router(addon_publish.router)

_HASH = "2cf87e9c351718de5eb83cf2429595c7f6053f3e37095286007dec99ef61455b"
_ETAG = f'"{_HASH}"'
_INTEGRITY = "sha384-UEwkd93Jyb3EpVUZ0e4n9g/+89r3l0cXqCbUwlLFV8zRmUbp4jmQmApBrt0mEU2Q"
_ENTRY = {
    "id": "sandbox",
    "name": "Sandbox image chat",
    "version": "0.2.0",
    "channel": "stable",
    "matches": ["http://127.0.0.1/chat*", "http://localhost/chat*"],
    "excludeMatches": [],
    "world": "USER_SCRIPT",
    "runAt": "document_idle",
    "requires": {},
    "parts": [{"id": "sandbox", "version": "0.2.0"}],
    "etag": _ETAG,
    "hash": _HASH,
    "integrity": _INTEGRITY,
    "url": "/api/v1/addons/sandbox",
    "bundleUrl": f"/api/v1/addons/bundles/{_HASH}.js",
}
_JS_HEADERS = {
    name: {"description": description, "required": True, "schema": {"type": "string"}}
    for name, description in (
        ("ETag", "Strong: the sha256 of the bytes."),
        (
            "Cache-Control",
            "`no-cache` (revalidate), or `public, max-age=31536000, immutable` "
            "for a pinned version or a content-addressed bundle.",
        ),
        ("Last-Modified", "When the newest part changed or was published."),
        ("X-Addon-Integrity", "The bundle's subresource-integrity hash (sha384)."),
    )
}


def _js_answers(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": description,
            "headers": _JS_HEADERS,
            "content": {
                "text/javascript": {
                    "schema": {"type": "string"},
                    "example": ";(() => { // sandbox@0.2.0\n/* ... */\n})();\n"
                    "//# sourceURL=semantest-addon://sandbox/0.2.0/bundle.js\n",
                }
            },
        },
        304: {
            "description": "`If-None-Match` (or else `If-Modified-Since`) matched.",
            "headers": _JS_HEADERS,
        },
    }


def _resolve_answers() -> dict[int | str, dict[str, Any]]:
    """`resolve`'s 200: the bundle, or with `Accept: application/json` what matched."""
    answers = _js_answers(
        "The bundle of every addon matching the page, dependencies first; "
        "with `Accept: application/json`, what matched and its hashes."
    )
    answers[200]["content"]["application/json"] = {
        "schema": {"type": "object"},
        "example": {
            "url": "http://127.0.0.1:8000/chat",
            "addons": [{"id": "sandbox", "version": "0.2.0"}],
            "hash": _HASH,
            "integrity": _INTEGRITY,
            "bundleUrl": _ENTRY["bundleUrl"],
        },
    }
    return answers


_CONDITIONAL = {
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
ChannelQuery = Annotated[
    Literal["stable", "beta"], Query(description="`beta` falls back to stable per addon")
]


async def addon_reader(request: Request, state: State) -> Caller | None:
    """The caller of an addon GET: none when public and no key is sent; a key sent (or one
    required, `SEMANTEST_ADDONS_PUBLIC=false`) must hold `addons:read`."""
    if state.settings.addons_public and presented_key(request) is None:
        return None
    caller = await authenticate(request, state)
    if "addons:read" not in caller.scopes:
        raise forbidden(caller, "addons:read")
    return caller


Reader = Annotated[Caller | None, Depends(addon_reader)]


def prebuilt_of(request: Request) -> Prebuilt:
    """This process's prebuilt answers."""
    found: Prebuilt = request.app.state.addon_prebuilt
    return found


def respond(request: Request, found: tuple[bytes, Headers] | None, missing: str) -> Response:
    """A prebuilt answer through `answer()`, or 404 ADDON_NOT_FOUND."""
    if found is None:
        raise AddonNotFound(missing)
    body, headers = found
    raw = {k.lower(): v for k, v in request.scope["headers"]}
    status, out, payload = answer(raw, body, headers)
    ADDON_REQUESTS.labels(route_template(request.scope), str(status)).inc()
    response = Response(payload, status_code=status)
    response.raw_headers = list(out)
    return response


@router.get(
    "",
    response_class=Response,
    responses=success(200, {"addons": [_ENTRY]}, description="Every addon on the channel.")
    | {304: {"description": "`If-None-Match` matched the index's ETag."}}
    | rate_limited(),
    openapi_extra=_CONDITIONAL,
    dependencies=[limit(Endpoint.ADDONS)],
)
async def index(request: Request, _caller: Reader, channel: ChannelQuery = "stable") -> Response:
    """Every addon's version on a channel: match patterns, bundle hashes and URLs (with an ETag)."""
    return respond(request, prebuilt_of(request).indexes.get(channel), "no such channel")


@router.get(
    "/resolve",
    response_class=Response,
    responses=_resolve_answers()
    | responses(403, 422, example_code="DOMAIN_NOT_ALLOWED")
    | rate_limited(),
    dependencies=[limit(Endpoint.ADDONS)],
)
async def resolve(
    request: Request,
    caller: Reader,
    state: State,
    url: str = Query(min_length=1, max_length=4096, description="the page URL"),
    channel: ChannelQuery = "stable",
) -> Response:
    """The one bundle for a page: every addon whose patterns match `url` as Chrome would."""
    parsed = ParsedUrl.of(url)
    if parsed is None or not parsed.scheme:
        raise ValidationError(
            f"url: {url!r} is not an absolute URL",
            [{"field": "url", "reason": "not an absolute URL"}],
        )
    if caller is not None:
        await check_domain(state.redis, caller.tenant, url)
    matched, bundle = prebuilt_of(request).registry.resolve(url, channel)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(
            {
                "url": url,
                "addons": [{"id": s.addon.id, "version": s.addon.version} for s in matched],
                "hash": bundle.sha256,
                "integrity": bundle.integrity,
                "bundleUrl": bundle.url,
            }
        )
    headers = headers_for(
        bundle.body,
        bundle.etag,
        bundle.last_modified,
        cache=b"no-cache",
        media_type=b"text/javascript; charset=utf-8",
        extra={"X-Addon-Integrity": bundle.integrity, "X-Addon-Bundle": bundle.url},
    )
    return respond(request, (bundle.body, headers), "")


@router.get(
    "/bundles/{sha256}.js",
    response_class=Response,
    responses=_js_answers("A bundle by its sha256: these bytes never change.")
    | responses(404, example_code="ADDON_NOT_FOUND")
    | rate_limited(),
    openapi_extra=_CONDITIONAL,
    dependencies=[limit(Endpoint.ADDONS)],
)
async def bundle(request: Request, sha256: str, _caller: Reader) -> Response:
    """A content-addressed bundle (listed in the index as `bundleUrl`): cacheable forever."""
    return respond(request, prebuilt_of(request).bundle(sha256), f"no bundle {sha256!r}")


@router.get(
    "/{addon_id}",
    response_class=Response,
    responses=_js_answers("The addon's bundle (its dependencies first, then itself).")
    | responses(404, example_code="ADDON_NOT_FOUND")
    | rate_limited(),
    openapi_extra=_CONDITIONAL,
    dependencies=[limit(Endpoint.ADDONS)],
)
async def source(
    request: Request,
    addon_id: str,
    _caller: Reader,
    version: str | None = Query(default=None, max_length=64, description="pin a version"),
    channel: ChannelQuery = "stable",
) -> Response:
    """An addon's bundle: its version on `channel`, or `?version=` pinned (cached forever)."""
    prebuilt = prebuilt_of(request)
    if version is not None:
        found = prebuilt.pinned(addon_id, version)
        return respond(request, found, f"no version {version!r} of addon {addon_id!r}")
    query = f"channel={channel}".encode()
    found = lookup(prebuilt, f"/api/v1/addons/{addon_id}", query)
    if found is None:
        prebuilt.registry.get(addon_id, channel=channel)  # raises the precise 404
    return respond(request, found, f"no addon {addon_id!r}")


__all__ = ["describe", "router"]
