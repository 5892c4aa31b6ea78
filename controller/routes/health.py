"""Liveness and readiness: Redis reachable, queue depths, live agents, storage writable."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from controller.openapi import success
from controller.state import State
from semantest import canaries, keys
from semantest.models import KNOWN_PROVIDERS, Priority

router = APIRouter(tags=["health"])

#: What `/health` answers, both when ready (200) and when not (503).
_HEALTH_SCHEMA = {
    "type": "object",
    "required": ["status", "redis", "storage"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "redis": {"type": "string", "description": "`ok` or `error: <exception>`."},
        "queues": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "Jobs waiting per queue (absent when Redis is down).",
        },
        "agents": {"type": "integer", "description": "Live agents (absent when Redis is down)."},
        "storage": {"type": "string", "description": "`ok` or `error: <why>`."},
        "providers": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "enum": ["ok", "degraded", "unknown"]},
                    "since": {"type": ["number", "null"]},
                    "reason": {"type": ["string", "null"]},
                },
            },
            "description": "Each provider's health as its canaries found it: `degraded` "
            "providers get no `auto` or list jobs (absent when Redis is down).",
        },
        "runId": {
            "type": "string",
            "description": "The id `semantest up` gave this run of the stack (absent otherwise): "
            "how a starting stack tells its own controller from another one on the same port.",
        },
    },
}
_READY = {
    "status": "ok",
    "redis": "ok",
    "queues": {"semantest.sandbox.high": 0, "semantest.sandbox.normal": 3},
    "agents": 2,
    "storage": "ok",
}
_DEGRADED = {"status": "degraded", "redis": "error: ConnectionError", "storage": "ok"}


@router.get(
    "/health",
    responses=success(200, _READY, description="Ready.", schema=_HEALTH_SCHEMA)
    | success(503, _DEGRADED, description="Not ready; the same body.", schema=_HEALTH_SCHEMA),
)
async def health(state: State) -> JSONResponse:
    """200 when the controller can take and serve jobs, 503 (same body) when it cannot."""
    checks: dict[str, Any] = {}
    queues = [keys.queue_name(p, lane.value) for p in KNOWN_PROVIDERS for lane in Priority]
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.ping()
            for p in KNOWN_PROVIDERS:
                for lane in Priority:
                    rq_list, depth = keys.waiting(p, lane.value)
                    pipe.llen(rq_list)
                    pipe.get(depth)
            pipe.zcount(keys.AGENTS, time.time() - keys.AGENT_TTL_S, "+inf")
            replies = await pipe.execute()
        checks["redis"] = "ok"
        counts = replies[1:-1]
        checks["queues"] = {
            name: int(counts[2 * i]) + int(counts[2 * i + 1] or 0) for i, name in enumerate(queues)
        }
        checks["agents"] = replies[-1]
        checks["providers"] = {
            name: h.model_dump(mode="json", by_alias=True, include={"status", "since", "reason"})
            for name, h in (await canaries.health(state.redis)).items()
        }
    except (RedisError, OSError) as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    checks["storage"] = await state.storage.check()
    ok = checks["redis"] == "ok" and checks["storage"] == "ok"
    if state.settings.run_id is not None:
        checks["runId"] = state.settings.run_id
    return JSONResponse({"status": "ok" if ok else "degraded", **checks}, 200 if ok else 503)
