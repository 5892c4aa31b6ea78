"""The functions RQ runs, by dotted path (`semantest.keys.GENERATE_FUNC`, `FAILURE_CALLBACK`).

They execute in the agent's main thread (the worker never forks) and hand the work to the
agent's runtime, which owns the browser on its own event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from types import TracebackType
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from rq.exceptions import AbandonedJobError
from rq.job import Job

from agents.runtime import AgentRuntime
from semantest.jobstore import JobStore, TerminalRecord
from semantest.models import JobError, JobRecord, JobStatus

log = logging.getLogger(__name__)
_runtime: AgentRuntime | None = None

#: Statuses of an attempt that has started but not yet recorded how it ended.
_IN_FLIGHT = (JobStatus.LEASED, JobStatus.RUNNING)


class _Recorded(Exception):
    """The attempt already recorded its outcome; leave the record alone."""


def install(runtime: AgentRuntime) -> None:
    """Make `runtime` the one this process's jobs run on."""
    global _runtime
    _runtime = runtime


def generate(job_id: str) -> dict[str, Any]:
    """Run one attempt of a job; RQ retries it when this raises a retryable failure."""
    if _runtime is None:
        raise RuntimeError("agents.jobs.generate runs only inside an agent (python -m agents)")
    # Past the agent's own timeout, before RQ's backstop (keys.RQ_TIMEOUT_MARGIN_S).
    timeout = _runtime.settings.job_timeout_s + 30
    return _runtime.call(_runtime.execute(job_id), timeout=timeout)


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
    """RQ's failure callback: record attempts that ended without recording anything.

    An attempt records its own outcome (`retrying` or `failed`) before it raises, so for those
    this does nothing. It matters when the attempt never got the chance: the agent was killed
    mid-job (RQ's registry clean-up, run by any live agent, calls this with `AbandonedJobError`)
    or RQ's backstop timeout fired. RQ calls it before deciding on a retry, so `retries_left`
    tells whether the job goes back on its queue.
    """
    retry = bool(job.retries_left and job.retries_left > 0)
    if exc_type is not None and issubclass(exc_type, AbandonedJobError):
        code, message = "AGENT_LOST", "the agent running this job stopped before it finished"
    else:
        code, message = "AGENT_ERROR", f"the attempt ended without a result: {exc_value!r}"

    def mark(r: JobRecord) -> None:
        if r.status not in _IN_FLIGHT:
            raise _Recorded
        r.error = JobError(code=code, message=message, retryable=retry)
        r.status = JobStatus.RETRYING if retry else JobStatus.FAILED
        if not retry:
            r.finished_at = time.time()

    async def apply() -> None:
        redis = async_twin(connection)
        try:
            await JobStore(redis).update(job.id, mark)
        except (KeyError, TerminalRecord, _Recorded):
            return  # expired, final, or recorded by the attempt itself: nothing to mark
        finally:
            await redis.aclose()
        log.warning("job %s: %s (%s)", job.id, code, "retrying" if retry else "failed")

    asyncio.run(apply())
