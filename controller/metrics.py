"""The controller's side of the metrics: `GET /metrics`, the scrape target list, HTTP timings.

- `GET /metrics` answers the Prometheus text format: every granian worker's samples summed
  (prometheus-client's multiprocess mode, see `semantest/metrics.py`), then the fleet's gauges
  read from Redis at scrape time — lane depths, slots by state (parked ones with why), agents,
  their memory — so whichever worker answers, the numbers are the fleet's.
- `GET /api/v1/metrics/targets` lists every other process serving its own `/metrics` (agents,
  the pool supervisor, webhook workers) in Prometheus' HTTP service discovery format.
- `HttpMetrics` (ASGI middleware) times every request by method, route *template* (never the
  raw path: a job id would make a series per job) and status.

Both routes answer without a key unless `SEMANTEST_METRICS_PUBLIC=false`; then they take the
`admin` scope, which Prometheus sends with `authorization: {credentials: <key>}`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.auth import authenticate, forbidden
from controller.routes.fleet import live_agents
from controller.state import State
from semantest import keys, providers
from semantest.fleet import AgentHeartbeat, AgentState, SlotState
from semantest.metrics import HTTP_DURATION, MULTIPROC_ENV, live_targets, stale_fields
from semantest.models import Priority

router = APIRouter(include_in_schema=False)

#: The route label of a request no route matched (any path: one series for all of them).
UNMATCHED = "unmatched"


class HttpMetrics:
    """Times each HTTP request into `semantest_http_request_duration_seconds`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            HTTP_DURATION.labels(scope["method"], route_template(scope), str(status[0])).observe(
                time.perf_counter() - started
            )


def route_template(scope: Scope) -> str:
    """The matched route's path with its parameters as `{name}` (`UNMATCHED` without a route).

    Built from the request's path and the values the router matched, as the route's own
    `path` lacks the prefixes of the routers that include it.
    """
    if scope.get("route") is None:
        return UNMATCHED
    segments = scope["path"].split("/")
    for name, value in (scope.get("path_params") or {}).items():
        text = str(value)
        for i, segment in enumerate(segments):
            if segment == text:
                segments[i] = f"{{{name}}}"
                break
    return "/".join(segments)


async def _allowed(request: Request, state: State) -> None:
    """Nothing when metrics are public; else the caller must hold `admin` (401/403 otherwise)."""
    if state.settings.metrics_public:
        return
    caller = await authenticate(request, state)
    if "admin" not in caller.scopes:
        raise forbidden(caller, "admin")


@router.get("/metrics")
async def metrics(request: Request, state: State) -> Response:
    """Prometheus text format: this controller's processes, then the fleet's gauges."""
    await _allowed(request, state)
    agents = await live_agents(state.redis)
    depths = await _depths(state)
    if MULTIPROC_ENV in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:  # one process (tests, a controller built in-process): its own registry
        body = generate_latest(REGISTRY)
    fleet = CollectorRegistry(auto_describe=False)
    fleet.register(_Fixed(fleet_families(agents, depths)))
    return Response(body + generate_latest(fleet), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/metrics/targets")
async def targets(request: Request, state: State) -> list[dict[str, Any]]:
    """Every process serving its own `/metrics`, as Prometheus' `http_sd_configs` reads it."""
    await _allowed(request, state)
    raw = await state.redis.hgetall(keys.METRICS_TARGETS)
    now = time.time()
    stale = stale_fields(raw, now)
    if stale:  # processes that ended (a restarted webhook worker has a new pid, so a new name)
        await state.redis.hdel(keys.METRICS_TARGETS, *stale)
    return [
        {
            "targets": [t["target"]],
            "labels": {"job": f"semantest-{t['role']}", "role": t["role"], "name": t["instance"]},
        }
        for t in live_targets(raw, now)
    ]


async def _depths(state: State) -> dict[tuple[str, str], int]:
    """Jobs waiting per (provider, lane): RQ's list (retries, given back) plus the fair queues."""
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


def fleet_families(
    agents: list[AgentHeartbeat], depths: dict[tuple[str, str], int]
) -> list[Metric]:
    """The fleet's gauges from live heartbeats and lane depths."""
    known = sorted({*providers.names(), *(s.provider for a in agents for s in a.slots)})
    depth = GaugeMetricFamily(
        "semantest_queue_depth", "Jobs waiting per provider and lane.", labels=["provider", "lane"]
    )
    for (provider, lane), n in sorted(depths.items()):
        depth.add_metric([provider, lane], n)
    slots = GaugeMetricFamily(
        "semantest_slots",
        "Tab slots of live agents by provider, state and (parked ones) reason.",
        labels=["provider", "state", "reason"],
    )
    counts: dict[tuple[str, str, str], int] = {}
    for provider in known:
        for s in SlotState:
            counts[(provider, s.value, "")] = 0
    for agent in agents:
        for slot in agent.slots:
            label = (slot.provider, slot.state.value, slot.parked_reason or "")
            counts[label] = counts.get(label, 0) + 1
    for label, n in sorted(counts.items()):
        slots.add_metric(list(label), n)
    utilisation = GaugeMetricFamily(
        "semantest_slot_utilisation",
        "Busy slots over all slots of live agents, per provider (0 without slots).",
        labels=["provider"],
    )
    for provider in known:
        mine = [s for a in agents for s in a.slots if s.provider == provider]
        busy = sum(1 for s in mine if s.state is SlotState.BUSY)
        utilisation.add_metric([provider], busy / len(mine) if mine else 0.0)
    agent_states = GaugeMetricFamily("semantest_agents", "Live agents by state.", labels=["state"])
    for state in AgentState:
        agent_states.add_metric([state.value], sum(1 for a in agents if a.state is state))
    memory = GaugeMetricFamily(
        "semantest_agent_memory_bytes",
        "Memory of each live agent with its Playwright driver and Chromium (pss, rss).",
        labels=["agent", "kind"],
    )
    for agent in agents:
        memory.add_metric([agent.id, "pss"], agent.pss_bytes)
        memory.add_metric([agent.id, "rss"], agent.rss_bytes)
    return [depth, slots, utilisation, agent_states, memory]


class _Fixed(Collector):
    """A collector that yields families computed before the scrape (from async reads)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families
