"""Prometheus metrics: the one list of names and labels every Semantest process exports.

Who exports what (docs/observability.md has the whole picture and the Prometheus config):

- **The controller** serves `GET /metrics`. Its granian workers are separate processes, so it
  runs prometheus-client's multiprocess mode: `controller/__main__.py` points
  `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before anything imports prometheus-client,
  each worker writes its samples there, and whichever worker answers a scrape sums them all.
  Fleet-wide gauges (queue depths, slots, agents) are read from Redis at scrape time
  (`controller/metrics.py`), so every worker answers the same numbers.
- **Agents, the pool supervisor and webhook workers** each serve their own `/metrics`
  (`serve()`), on `SEMANTEST_METRICS_PORT` (0: a free port) — the layout a Prometheus operator
  expects, one target per process (a PodMonitor in Kubernetes). Each also publishes its address
  in Redis, and the controller lists them all at `GET /api/v1/metrics/targets` in Prometheus'
  HTTP service discovery format, so one `http_sd_configs` entry finds every process of a stack.

A job's final status and durations are counted where it becomes final (`JobStore._finished`:
the agent that ran it, or the controller that cancelled or reaped it), once per job; Prometheus
sums the processes. Labels are bounded: provider, lane, tenant, status, error code, route
template, outcome — never a job id, a prompt or a raw path. Must not import anything of ours
but the kernel.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram, start_http_server
from redis import Redis

from semantest import keys

if TYPE_CHECKING:
    from semantest.config import Settings
    from semantest.models import JobRecord

log = logging.getLogger(__name__)

#: prometheus-client reads this variable when it is imported (`controller/__main__.py` sets it).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds between two publications of a process's scrape target; one unseen for
#: `TARGET_TTL_S` is left out of the list (its process is gone).
TARGET_REFRESH_S = 10.0
TARGET_TTL_S = 45.0

#: Job phases last from well under a second (a cached result) to the job timeout and beyond
#: (retries, a deep queue).
JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300, 600, 1800)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# -- jobs (counted where a job becomes final) ---------------------------------------------------

JOBS_FINISHED = Counter(
    "semantest_jobs_finished",
    "Jobs that reached a final status, by provider, lane, status and error code ('' if none).",
    ["provider", "lane", "status", "code"],
)
JOB_QUEUE_WAIT = Histogram(
    "semantest_job_queue_wait_seconds",
    "From submission to the first attempt's lease, per provider and tenant.",
    ["provider", "tenant"],
    buckets=JOB_BUCKETS,
)
JOB_RUN = Histogram(
    "semantest_job_run_seconds",
    "From the first lease to the final status (every attempt and wait between), per provider "
    "and tenant.",
    ["provider", "tenant"],
    buckets=JOB_BUCKETS,
)
JOB_TOTAL = Histogram(
    "semantest_job_total_seconds",
    "From submission to the final status, per provider, tenant and status.",
    ["provider", "tenant", "status"],
    buckets=JOB_BUCKETS,
)

# -- agents and the pool -----------------------------------------------------------------------

AGENT_STARTS = Counter(
    "semantest_agent_starts", "Agent processes that became ready (cold starts).", ["provider"]
)
AGENT_COLD_START = Histogram(
    "semantest_agent_cold_start_seconds",
    "From agent process start to browser, extension and slots ready.",
    ["provider"],
    buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60),
)
AGENT_RESTARTS = Counter(
    "semantest_agent_restarts",
    "Agents the pool supervisor started again, by reason (recycle: asked to be replaced; "
    "crash: exited otherwise).",
    ["reason"],
)
ATTEMPTS = Counter(
    "semantest_attempts",
    "Attempts agents ran, by provider and how they ended (succeeded, retry, failed, skipped).",
    ["provider", "outcome"],
)

# -- webhooks, addons, rate limits, HTTP -------------------------------------------------------

WEBHOOK_DELIVERIES = Counter(
    "semantest_webhook_deliveries",
    "Webhook delivery attempts by event type and outcome (delivered, retrying, failed).",
    ["event", "outcome"],
)
WEBHOOK_DELIVERY_SECONDS = Histogram(
    "semantest_webhook_delivery_seconds",
    "Duration of one delivery attempt (resolve, connect, post, answer).",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ADDON_REQUESTS = Counter(
    "semantest_addon_requests",
    "Addon GETs the controller answered, by route template and status (200 hit, 304 not "
    "modified, 4xx).",
    ["route", "status"],
)
RATE_LIMITED = Counter(
    "semantest_rate_limit_rejections",
    "Requests refused with 429 RATE_LIMITED, by endpoint group and plan.",
    ["endpoint", "plan"],
)
HTTP_DURATION = Histogram(
    "semantest_http_request_duration_seconds",
    "Controller HTTP requests by method, route template and status code.",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
)

#: Every metric name a process of ours can export, for the Grafana dashboard's test. The
#: fleet gauges are read from Redis by the controller at scrape time (`controller/metrics.py`).
FLEET_GAUGES = (
    "semantest_queue_depth",
    "semantest_slots",
    "semantest_slot_utilisation",
    "semantest_agents",
    "semantest_agent_memory_bytes",
)


def observe_final(record: JobRecord) -> None:
    """Count a job that just became final: its status, error code and durations."""
    status = record.status.value
    code = record.error.code if record.error is not None else ""
    JOBS_FINISHED.labels(record.provider, record.priority.value, status, code).inc()
    end = record.finished_at or time.time()
    JOB_TOTAL.labels(record.provider, record.tenant, status).observe(
        max(0.0, end - record.created_at)
    )
    if record.started_at is not None:
        JOB_QUEUE_WAIT.labels(record.provider, record.tenant).observe(
            max(0.0, record.started_at - record.created_at)
        )
        JOB_RUN.labels(record.provider, record.tenant).observe(max(0.0, end - record.started_at))


def serve(settings: Settings, role: str, instance: str) -> int:
    """Serve this process's `/metrics` and publish it as a scrape target; returns the port.

    `role` is `agent`, `pool` or `webhooks`; `instance` names the process (an agent's id).
    A fixed `metrics_port` already taken (two agents of one pool on one host) falls back to a
    free port rather than failing the process.
    """
    try:
        server, _thread = start_http_server(settings.metrics_port, settings.metrics_host)
    except OSError as exc:
        log.warning("metrics port %d taken (%s); using a free one", settings.metrics_port, exc)
        server, _thread = start_http_server(0, settings.metrics_host)
    port = int(server.server_port)
    host = settings.metrics_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    target = {"target": f"{host}:{port}", "role": role, "instance": instance}
    if settings.redis_url is not None:
        threading.Thread(
            target=_publish,
            args=(settings.redis_url, target),
            name="metrics-target",
            daemon=True,
        ).start()
    log.info("metrics at http://%s/metrics", target["target"])
    return port


def _publish(redis_url: str, target: dict[str, str]) -> None:
    """Refresh this process's entry in the scrape target list until the process ends."""
    redis = Redis.from_url(redis_url, socket_timeout=5)
    field = f"{target['role']}/{target['instance']}"
    while True:
        try:
            redis.hset(keys.METRICS_TARGETS, field, json.dumps(target | {"seen": time.time()}))
        except Exception as exc:  # Redis down for a while: the next refresh puts it back
            log.debug("publishing the metrics target failed: %s", exc)
        time.sleep(TARGET_REFRESH_S)


def stale_fields(raw: Mapping[Any, Any], now: float) -> list[Any]:
    """The fields of `keys.METRICS_TARGETS` not refreshed within `TARGET_TTL_S` (gone)."""
    return [
        f
        for f, value in raw.items()
        if now - float(json.loads(value).get("seen", 0)) > TARGET_TTL_S
    ]


def live_targets(raw: Mapping[Any, Any], now: float) -> list[dict[str, str]]:
    """The targets of `keys.METRICS_TARGETS` seen within `TARGET_TTL_S`, by role and instance."""
    out = []
    for value in raw.values():
        entry = json.loads(value)
        if now - float(entry.get("seen", 0)) <= TARGET_TTL_S:
            out.append({k: str(entry[k]) for k in ("target", "role", "instance")})
    return sorted(out, key=lambda t: (t["role"], t["instance"]))
