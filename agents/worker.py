"""The life of an agent, top to bottom.

1. Read settings, pick an id, start the runtime: Chromium with the extension, the bridge, one
   slot on the provider page (that is "cold start").
2. Register as an RQ `SimpleWorker` on the provider's queues and take jobs one at a time —
   no fork per job, the browser stays warm.
3. On SIGTERM/SIGINT, RQ's warm shutdown lets the current job finish; then the browser closes
   and the agent leaves the live set. A job of an agent that dies instead is still in RQ's
   started registry and is re-queued by RQ's abandoned-job clean-up (bounded by its Retry).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from redis import Redis
from rq import Queue, SimpleWorker

from agents import jobs
from agents.runtime import AgentRuntime
from semantest import keys
from semantest.config import Settings
from semantest.models import Priority

log = logging.getLogger(__name__)


class AgentWorker(SimpleWorker):
    """An RQ worker that runs jobs in its own process, next to a long-lived browser."""


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc), so start-up time includes imports."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))


def run_agent(settings: Settings, name: str | None = None, provider: str = "sandbox") -> None:
    """Start an agent and work until told to stop."""
    started = time.perf_counter() - process_age_s()
    if settings.redis_url is None or settings.chromium is None:
        raise SystemExit("agent needs SEMANTEST_REDIS_URL and a Chromium (SEMANTEST_CHROMIUM)")
    agent_id = name or f"{socket.gethostname()}-{os.getpid()}"
    runtime = AgentRuntime(settings, agent_id, provider)
    runtime.start(started)
    jobs.install(runtime)
    redis = Redis.from_url(settings.redis_url)
    # High lane first: RQ takes from the first non-empty queue in this order.
    queues = [Queue(keys.queue_name(provider, p.value), connection=redis) for p in Priority]
    # Registry maintenance every minute (RQ's default is 10): it is what re-queues a job whose
    # agent died mid-run, once the job's timeout + 60 s have passed.
    worker = AgentWorker(queues, connection=redis, name=agent_id, maintenance_interval=60)
    try:
        worker.work(logging_level=settings.log_level.upper())
    finally:
        runtime.stop()
        redis.close()
        log.info("agent %s stopped after %d jobs", agent_id, runtime.jobs_done)
