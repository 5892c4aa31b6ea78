"""Addon bytes on the wire: the one place an addon GET is answered (200 or 304), and the lean
ASGI path that answers most of them before FastAPI's routing and dependency machinery.

`answer()` decides every addon answer, for the fast path and for the FastAPI routes alike:
the status (304 when `If-None-Match` names the ETag, or else `If-Modified-Since` is not older
than `Last-Modified`; RFC 9110, section 13.1.1-13.2.2), and the headers, precomputed once per
bundle per snapshot (`Headers`). Pinned answers (`?version=`, content-addressed bundle URLs)
are `Cache-Control: public, max-age=31536000, immutable`; the rest `no-cache` (revalidate).

`AddonFastPath` sits in front of the app's whole middleware stack (`install`), so a hit costs
a dictionary lookup and two `send`s: it adds the `X-Request-ID` every answer carries itself,
and skips the HTTP timing middleware and the audit trail (GETs are never audited); addon hits
and 304s are counted by `semantest_addon_requests_total`. It answers `GET|HEAD
/api/v1/addons`, `/api/v1/addons/{id}` (with or without `version=`/`channel=`) and
`/api/v1/addons/bundles/{sha256}.js` when the addon routes are public; with rate limits on it
runs the same check the routes run (`controller.ratelimit`), and it hands anything else (a key
needed, unknown ids, a refused request, odd queries) to the full app, which answers the same
way or with the error envelope.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from addons.bundle import Bundle
from addons.registry import Registry, Served
from semantest.errors import AddonNotFound
from semantest.metrics import ADDON_REQUESTS

IMMUTABLE = b"public, max-age=31536000, immutable"
REVALIDATE = b"no-cache"
JS = b"text/javascript; charset=utf-8"
JSON = b"application/json"
PREFIX = "/api/v1/addons"
BUNDLES = PREFIX + "/bundles/"
_RID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class Headers:
    """The header lists of one body, built once."""

    ok: list[tuple[bytes, bytes]]
    not_modified: list[tuple[bytes, bytes]]
    etag: bytes
    last_modified: str | None


def headers_for(
    body: bytes,
    etag: str,
    last_modified: str | None,
    *,
    cache: bytes,
    media_type: bytes,
    extra: Mapping[str, str] | None = None,
) -> Headers:
    """The precomputed headers of a 200 and a 304 of `body`."""
    common = [(b"etag", etag.encode()), (b"cache-control", cache)]
    if last_modified:
        common.append((b"last-modified", last_modified.encode()))
    common += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    ok = [
        (b"content-type", media_type),
        (b"content-length", str(len(body)).encode()),
        *common,
    ]
    return Headers(ok, common, etag.encode(), last_modified)


def bundle_headers(bundle: Bundle, served: Served | None, *, pinned: bool) -> Headers:
    """Headers of an addon's bundle (`served` given) or of a content-addressed bundle."""
    extra = {"X-Addon-Integrity": bundle.integrity}
    if served is not None:
        extra["X-Addon-Version"] = served.addon.version
    return headers_for(
        bundle.body,
        bundle.etag,
        bundle.last_modified,
        cache=IMMUTABLE if pinned else REVALIDATE,
        media_type=JS,
        extra=extra,
    )


def not_modified(request_headers: Mapping[bytes, bytes], headers: Headers) -> bool:
    """If-None-Match decides when present (`*` or a listed tag, weak compare); else
    If-Modified-Since against Last-Modified."""
    inm = request_headers.get(b"if-none-match")
    if inm is not None:
        if inm.strip() == b"*":
            return True
        return any(t.strip().removeprefix(b"W/") == headers.etag for t in inm.split(b","))
    ims = request_headers.get(b"if-modified-since")
    if ims is not None and headers.last_modified:
        try:
            since = parsedate_to_datetime(ims.decode("latin-1"))
            return since >= parsedate_to_datetime(headers.last_modified)
        except (TypeError, ValueError):
            return False
    return False


def answer(
    request_headers: Mapping[bytes, bytes], body: bytes, headers: Headers
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The one decision of an addon GET: 304 with the validators, or 200 with the bytes."""
    if not_modified(request_headers, headers):
        return 304, headers.not_modified, b""
    return 200, headers.ok, body


class Prebuilt:
    """Every answer body and header list of one registry snapshot (built on each rebuild)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.sources: dict[tuple[str, str], tuple[bytes, Headers]] = {}
        for channel in ("stable", "beta"):
            for served in registry.current(channel):
                key = (served.addon.id, channel)
                self.sources[key] = (
                    served.bundle.body,
                    bundle_headers(served.bundle, served, pinned=False),
                )
        self.indexes: dict[str, tuple[bytes, Headers]] = {
            ch: (body, headers_for(body, etag, None, cache=REVALIDATE, media_type=JSON))
            for ch, (body, etag) in registry.indexes.items()
        }
        self._pinned: dict[tuple[str, str], tuple[bytes, Headers]] = {}
        self._bundles: dict[str, tuple[bytes, Headers]] = {}

    def pinned(self, addon_id: str, version: str) -> tuple[bytes, Headers] | None:
        """A pinned version's answer (built on its first request, then kept)."""
        found = self._pinned.get((addon_id, version))
        if found is None:
            try:
                served = self.registry.get(addon_id, version)
            except AddonNotFound:
                return None
            found = (served.bundle.body, bundle_headers(served.bundle, served, pinned=True))
            self._pinned[(addon_id, version)] = found
        return found

    def bundle(self, sha256: str) -> tuple[bytes, Headers] | None:
        """A content-addressed bundle's answer."""
        found = self._bundles.get(sha256)
        if found is None:
            bundle = self.registry.bundle(sha256)
            if bundle is None:
                return None
            found = (bundle.body, bundle_headers(bundle, None, pinned=True))
            self._bundles[sha256] = found
        return found


def lookup(prebuilt: Prebuilt, path: str, query: bytes) -> tuple[bytes, Headers] | None:
    """The prebuilt answer for an addon GET, or None when the full app should answer."""
    params: dict[str, str] = (
        dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {}
    )
    if path == PREFIX:
        if set(params) - {"channel"}:
            return None
        return prebuilt.indexes.get(params.get("channel", "stable"))
    if path.startswith(BUNDLES):
        name = path[len(BUNDLES) :]
        return prebuilt.bundle(name[:-3]) if name.endswith(".js") and not params else None
    addon_id = path[len(PREFIX) + 1 :]
    if not addon_id or "/" in addon_id or set(params) - {"version", "channel"}:
        return None
    if "version" in params:
        return None if "channel" in params else prebuilt.pinned(addon_id, params["version"])
    return prebuilt.sources.get((addon_id, params.get("channel", "stable")))


def addon_route(path: str) -> str:
    """The route template of a fast-path GET (the label of `semantest_addon_requests_total`)."""
    if path == PREFIX:
        return PREFIX
    return BUNDLES + "{name}" if path.startswith(BUNDLES) else PREFIX + "/{addon_id}"


def install(app: Starlette) -> None:
    """Put `AddonFastPath` in front of `app`'s whole middleware stack (built on first call)."""
    build = app.build_middleware_stack

    def build_with_fast_path() -> ASGIApp:
        return AddonFastPath(build())

    app.build_middleware_stack = build_with_fast_path  # type: ignore[method-assign]


class AddonFastPath:
    """Pure ASGI: answers public addon GETs from prebuilt bytes (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or not scope["path"].startswith(PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        app_state = scope["app"].state
        prebuilt: Prebuilt | None = getattr(app_state, "addon_prebuilt", None)
        state: Any = getattr(app_state, "semantest", None)
        if prebuilt is None or state is None or not state.settings.addons_public:
            await self.app(scope, receive, send)
            return
        found = lookup(prebuilt, scope["path"], scope["query_string"])
        if found is None:
            await self.app(scope, receive, send)
            return
        limits: list[tuple[bytes, bytes]] = []
        if state.settings.rate_limits:
            checked = await _rate_limit(scope, state)
            if checked is None:  # refused: the full route answers the 429 envelope
                await self.app(scope, receive, send)
                return
            limits = checked
        body, headers = found
        request_headers = dict(scope["headers"])
        status, out, payload = answer(request_headers, body, headers)
        ADDON_REQUESTS.labels(addon_route(scope["path"]), str(status)).inc()
        out = [*out, (b"x-request-id", _request_id(request_headers)), *limits]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else payload}
        )


def _request_id(request_headers: Mapping[bytes, bytes]) -> bytes:
    """The request's id, as `RequestContext` gives every other answer: a sane incoming
    `X-Request-ID`, or a new one."""
    incoming = request_headers.get(b"x-request-id")
    if incoming is not None and _RID.match(incoming):
        return incoming
    return os.urandom(16).hex().encode()


async def _rate_limit(scope: Scope, state: Any) -> list[tuple[bytes, bytes]] | None:
    """The addon bucket's check for this request: its headers, or None when refused."""
    from controller.ratelimit import RateLimiter, limiter_of  # the route modules' import order

    limiter: RateLimiter | None = getattr(scope["app"].state, "rate_limiter", None)
    if limiter is None:
        limiter = limiter_of(Request(scope), state)
    client = scope.get("client")
    try:
        decision = await limiter.check_anonymous_addons(client[0] if client else "unknown")
    except (RedisError, OSError):
        return []  # as the routes do: unlimited while Redis is unreachable
    return decision.headers() if decision.allowed else None
