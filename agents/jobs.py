"""The functions RQ runs, by dotted path (`semantest.keys.GENERATE_FUNC`, `FAILURE_CALLBACK`).

`generate` executes in one of the agent's slot threads (each slot is an RQ worker on its own
thread, see `agents/worker.py`) and hands the attempt to the agent's runtime, which owns the
browser on its own event loop. It turns the attempt's outcome into what RQ understands, so RQ's
state agrees with the record: success returns a value (RQ: finished), a retry returns
`rq.Retry` with the delay the retry policy chose (RQ: scheduled), a final failure raises
`AttemptFailed` (RQ: failed).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from types import TracebackType
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from rq import Retry
from rq.exceptions import AbandonedJobError
from rq.job import Job

from agents.runtime import CALL_GRACE_S, AgentRuntime
from semantest import attempts
from semantest.config import get_settings
from semantest.jobstore import JobStore, TerminalRecord
from semantest.models import JobRecord

log = logging.getLogger(__name__)
_runtime: AgentRuntime | None = None
#: Which slot the calling RQ worker thread drives (set by the thread before it works).
current = threading.local()


def install(runtime: AgentRuntime) -> None:
    """Make `runtime` the one this process's jobs run on."""
    global _runtime
    _runtime = runtime


def generate(job_id: str) -> dict[str, Any] | Retry:
    """Run one attempt of a job on the calling thread's slot."""
    if _runtime is None:
        raise RuntimeError("agents.jobs.generate runs only inside an agent (python -m agents)")
    slot: int = current.slot
    worker: str = current.worker
    backstop = _runtime.settings.job_timeout_s + CALL_GRACE_S
    outcome = _runtime.call(_runtime.execute(job_id, slot, worker), timeout=backstop)
    if outcome.kind == "retry":
        # `max` only bounds RQ's own count, which never exceeds ours: the policy decided.
        # A retried job has waited its turn once already: it goes to the front of its queue.
        retry = Retry(
            max=_runtime.settings.max_attempts, interval=outcome.delay_s, enqueue_at_front=True
        )
        if "failover" in outcome.detail:  # the slot worker moves it to that provider's queue
            retry.semantest_queue = outcome.detail["failover"]  # type: ignore[attr-defined]
        return retry
    if outcome.kind == "failed":
        raise attempts.AttemptFailed(f"job {job_id} failed: {outcome.detail}")
    return {"jobId": job_id, "status": outcome.kind, **outcome.detail}


def async_twin(connection: SyncRedis) -> Redis:
    """An asyncio client for the same server and database as RQ's synchronous `connection`."""
    given = dict(connection.connection_pool.connection_kwargs)
    if "path" in given:  # a unix socket connection
        given["unix_socket_path"] = given.pop("path")
    accepted = inspect.signature(Redis.__init__).parameters
    return Redis(**{name: value for name, value in given.items() if name in accepted})


def on_failure(
    job: Job,
    connection: SyncRedis,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    _tb: TracebackType | None,
) -> None:
    """RQ's failure callback: attempts that ended without recording how.

    An attempt records its own outcome, and its final failure arrives here as `AttemptFailed`:
    nothing to do. Otherwise the attempt never got the chance — RQ's backstop timeout fired,
    an exception escaped, or RQ's own registry clean-up found the job abandoned (normally the
    lease reaper gets there first, within seconds). Then the retry policy decides on the
    record, and RQ is told the same: RQ consults `job.retries_left` right after this callback,
    so setting it makes RQ re-queue exactly when the record says `retrying`.
    """
    if exc_type is not None and issubclass(exc_type, attempts.AttemptFailed):
        return
    if exc_type is not None and issubclass(exc_type, AbandonedJobError):
        code, message = "AGENT_LOST", "the agent running this job stopped before it finished"
    else:
        code, message = "AGENT_ERROR", f"the attempt ended without a result: {exc_value!r}"
    settings = get_settings()
    decided: list[attempts.Decision] = []

    def mark(r: JobRecord) -> None:
        decision = attempts.decide(r, True, settings, at_once=code == "AGENT_LOST")
        attempts.record_failure(r, code, message, decision)
        decided.append(decision)

    async def apply() -> None:
        redis = async_twin(connection)
        try:
            await JobStore(redis).update(job.id, mark)
        except (KeyError, TerminalRecord):
            return  # expired or final: RQ failing it agrees
        finally:
            await redis.aclose()

    asyncio.run(apply())
    if decided and decided[0].retry:
        job.retries_left, job.retry_intervals = 1, [decided[0].delay_s]
    log.warning(
        "job %s: %s (%s)", job.id, code, "retrying" if decided and decided[0].retry else "failed"
    )
