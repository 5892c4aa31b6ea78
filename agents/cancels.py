"""Stopping attempts whose job the client canceled.

The controller marks the record `canceled` and announces the id on `semantest:cancels`; this
task stops the slot's attempt that runs it (the attempt tells the addon to stop and frees the
slot, see `agents/attempt.py`). Pub/sub can drop a message while Redis restarts, so every
heartbeat interval the task also reads the records of the jobs its slots run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from semantest import keys
from semantest.models import JobRecord, JobStatus

if TYPE_CHECKING:
    from agents.runtime import AgentRuntime

log = logging.getLogger(__name__)
REASON = "the job was canceled"


def stop(runtime: AgentRuntime, job_id: str) -> None:
    """Stop the attempt running `job_id` on this agent, if any (on the agent's loop)."""
    for slot in runtime.slots:
        if slot.job_id == job_id:
            log.info("slot %s: job %s canceled, stopping it", slot.name, job_id)
            slot.stop_attempt("canceled", REASON)


async def _check_running(runtime: AgentRuntime) -> None:
    running = [s.job_id for s in runtime.slots if s.job_id is not None]
    if not running:
        return
    for job_id, raw in zip(
        running, await runtime.redis.mget([keys.job(i) for i in running]), strict=True
    ):
        if raw is not None and JobRecord.from_json(raw).status is JobStatus.CANCELED:
            stop(runtime, job_id)


async def watch(runtime: AgentRuntime) -> None:
    """Run for the agent's life: announcements at once, a record check every heartbeat."""
    while True:
        pubsub = runtime.redis.pubsub()
        try:
            await pubsub.subscribe(keys.CANCELS)
            checked = time.monotonic()
            while True:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=keys.HEARTBEAT_S
                )
                if message is not None:
                    data = message["data"]
                    stop(runtime, data.decode() if isinstance(data, bytes) else str(data))
                if time.monotonic() - checked >= keys.HEARTBEAT_S:
                    checked = time.monotonic()
                    await _check_running(runtime)
        except (RedisError, OSError) as exc:
            log.warning("cancel watch: Redis unavailable (%r); retrying", exc)
            await asyncio.sleep(keys.HEARTBEAT_S)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
