"""The operator's dashboard: `GET /dashboard`, a plain HTML/JS page, and the reads behind it.

The page (`controller/dashboard_static/`, no build step) asks for an admin key once, keeps it
in the tab's `sessionStorage` (gone when the tab closes, never in a cookie, so no other site
can make the browser use it) and sends it as `Authorization: Bearer` on every read. The page
itself holds no data and is served to anyone; everything it shows comes from routes that take
the `admin` scope:

- `GET /dashboard/api/summary`: lane depths, each provider's slots (busy, idle, parked with
  why) and health, and the most recent jobs of every tenant (`RECENT_JOBS`);
- `GET /api/v1/fleet`: agents and their slots (the fleet route itself);
- `GET /dashboard/api/images/{tenant}/{name}`: a stored image of any tenant (thumbnails; the
  client API's image route answers only the caller's own tenant);
- `GET /dashboard/api/evidence/{jobId}/{attempt}/{name}`: a failed attempt's screenshot or DOM;
- live progress of the jobs on the page over the WebSocket (`/api/v1/ws`), the summary
  re-read every `POLL_S` seconds for the rest.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from controller.auth import AdminCaller
from controller.records import present
from controller.routes.fleet import live_agents
from controller.state import AppState, State
from semantest import keys, providers
from semantest.api_keys import KeyStore
from semantest.errors import NotFound
from semantest.fleet import SlotState
from semantest.models import JobRecord, JobStatus, Priority
from semantest.storage import content_type_of, parse_key

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).with_name("dashboard_static")
#: The page's files: name → media type.
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
#: Jobs the summary lists, newest first, across tenants.
RECENT_JOBS = 30
#: Seconds the page waits between two summaries (it shows its own jobs live in between).
POLL_S = 2
#: Seconds the list of tenants is kept before it is read again.
TENANTS_TTL_S = 10.0
#: A failed attempt's evidence files (`agents/attempt.py` writes them).
EVIDENCE = {"screenshot.png": "image/png", "dom.html": "text/plain; charset=utf-8"}
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: The page's own policy: its script and styles only, reads of this origin (and its WebSocket).
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self' ws: wss: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@router.get("/dashboard")
async def page() -> HTMLResponse:
    """The dashboard's page (it asks for the admin key itself)."""
    html = (STATIC / "index.html").read_text()
    return HTMLResponse(
        html.replace("{{POLL_S}}", str(POLL_S)),
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": _CSP},
    )


@router.get("/dashboard/")
async def page_slash() -> RedirectResponse:
    """The same page without the slash."""
    return RedirectResponse("/dashboard", 308)


@router.get("/dashboard/{asset}")
async def asset(asset: str) -> FileResponse:
    """The page's script and styles."""
    media = ASSETS.get(asset)
    if media is None:
        raise NotFound(f"no dashboard file {asset!r}")
    return FileResponse(STATIC / asset, media_type=media, headers={"Cache-Control": "no-cache"})


@router.get("/dashboard/api/summary")
async def summary(_caller: AdminCaller, state: State) -> dict[str, Any]:
    """Lanes, providers and recent jobs, as the page shows them."""
    agents, depths, jobs = await asyncio.gather(
        live_agents(state.redis), _depths(state), _recent(state)
    )
    known = sorted({*providers.names(), *(s.provider for a in agents for s in a.slots)})
    shown = []
    used: set[str] = set()
    for provider in known:
        slots = [s for a in agents for s in a.slots if s.provider == provider]
        counts = {s.value: sum(1 for x in slots if x.state is s) for s in SlotState}
        recent = [j for j in jobs if j.provider == provider and j.status.terminal]
        failed = sum(1 for j in recent if j.status is JobStatus.FAILED)
        waiting = sum(n for (p, _lane), n in depths.items() if p == provider)
        if slots or waiting or recent:
            used.add(provider)
        shown.append(
            {
                "provider": provider,
                "agents": sum(1 for a in agents if provider in a.providers),
                "slots": counts,
                "parked": [
                    {"slot": s.name, "reason": s.parked_reason or "unknown"}
                    for s in slots
                    if s.state is SlotState.PARKED
                ],
                "recentFailed": failed,
                "recentFinished": len(recent),
                "health": _health(counts, failed, len(recent), waiting),
            }
        )
    return {
        "at": time.time(),
        "lanes": [
            {"provider": p, "lane": lane, "depth": n}
            for (p, lane), n in sorted(depths.items())
            if p in used  # a provider nothing serves or asks for adds only noise
        ],
        "providers": shown,
        "jobs": [_job(present(j, state)) for j in jobs],
    }


@router.get("/dashboard/api/images/{tenant}/{name}")
async def image(tenant: str, name: str, _caller: AdminCaller, state: State) -> Response:
    """A stored image of any tenant (the operator's view), for thumbnails."""
    key = f"{tenant}/{name}"
    parse_key(key)  # ImageNotFound for anything that is not one of our keys
    data = await state.storage.get(key)  # ImageNotFound when missing
    return Response(
        data,
        media_type=content_type_of(key),
        headers={"Cache-Control": "private, max-age=31536000, immutable"},
    )


@router.get("/dashboard/api/evidence/{job_id}/{attempt}/{name}")
async def evidence(
    job_id: str, attempt: str, name: str, _caller: AdminCaller, state: State
) -> FileResponse:
    """A failed attempt's screenshot or DOM, kept where agents write them."""
    media = EVIDENCE.get(name)
    path = state.settings.data_dir / "artifacts" / job_id / attempt / name
    if media is None or not _JOB_ID.match(job_id) or not attempt.isdigit() or not path.is_file():
        raise NotFound(f"no evidence {name!r} of job {job_id!r}")
    return FileResponse(path, media_type=media)


def _health(counts: dict[str, int], failed: int, finished: int, waiting: int) -> str:
    """`down`: jobs wait (or slots are parked) and no slot works; `unused`: no slot and nothing
    asked of it; `degraded`: parked slots, or most recent jobs failed; else `ok`."""
    working = counts["idle"] + counts["busy"]
    if not working:
        return "down" if waiting or counts["parked"] else "unused"
    if counts["parked"] or (finished >= 4 and failed * 2 > finished):
        return "degraded"
    return "ok"


def _job(record: JobRecord) -> dict[str, Any]:
    """What the page shows of one job."""
    return {
        "id": record.id,
        "tenant": record.tenant,
        "provider": record.provider,
        "lane": record.priority.value,
        "prompt": record.prompt[:200],
        "status": record.status.value,
        "progress": record.progress,
        "stage": record.stage.value,
        "attempts": record.attempts,
        "agent": record.agent,
        "createdAt": record.created_at,
        "finishedAt": record.finished_at,
        "error": record.error.model_dump(by_alias=True) if record.error else None,
        "images": [
            {"key": i.key, "url": f"/dashboard/api/images/{i.key}", "width": i.width}
            for i in record.images
        ],
        "evidence": {  # the served record's URLs end in `/artifacts/<attempt>/<file>`
            name: f"/dashboard/api/evidence/{record.id}/{url.rsplit('/artifacts/', 1)[-1]}"
            for name, url in record.artifacts.items()
            if name in ("screenshot", "dom")
        },
    }


async def _depths(state: AppState) -> dict[tuple[str, str], int]:
    pairs = [(p, lane.value) for p in providers.names() for lane in Priority]
    async with state.redis.pipeline(transaction=False) as pipe:
        for provider, lane in pairs:
            rq_list, depth = keys.waiting(provider, lane)
            pipe.llen(rq_list)
            pipe.get(depth)
        replies = await pipe.execute()
    return {
        pair: int(replies[2 * i]) + int(replies[2 * i + 1] or 0) for i, pair in enumerate(pairs)
    }


_tenants: dict[str, Any] = {"at": 0.0, "names": ["admin"]}


async def _tenant_names(state: AppState) -> list[str]:
    """Every tenant that has a key (and `admin`), read at most every `TENANTS_TTL_S`."""
    if time.monotonic() - _tenants["at"] > TENANTS_TTL_S:
        records = await KeyStore(state.redis).all()
        _tenants["names"] = sorted({"admin", *(r.tenant for r in records)})
        _tenants["at"] = time.monotonic()
    names: list[str] = _tenants["names"]
    return names


async def _recent(state: AppState) -> list[JobRecord]:
    """The newest `RECENT_JOBS` jobs of all tenants (each tenant's index is ordered by time)."""
    names = await _tenant_names(state)
    async with state.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zrevrange(keys.tenant_jobs(name), 0, RECENT_JOBS - 1, withscores=True)
        indexes = await pipe.execute()
    newest = sorted(
        ((score, member) for index in indexes for member, score in index), reverse=True
    )[:RECENT_JOBS]
    if not newest:
        return []
    raws = await state.redis.mget([keys.job(_text(m)) for _s, m in newest])
    return [JobRecord.from_json(raw) for raw in raws if raw is not None]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
