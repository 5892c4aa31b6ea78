"""The functions RQ runs, by dotted path (`semantest.keys.GENERATE_FUNC`).

They execute in the agent's main thread (the worker never forks) and hand the work to the
agent's runtime, which owns the browser on its own event loop.
"""

from __future__ import annotations

from typing import Any

from agents.runtime import AgentRuntime

_runtime: AgentRuntime | None = None


def install(runtime: AgentRuntime) -> None:
    """Make `runtime` the one this process's jobs run on."""
    global _runtime
    _runtime = runtime


def generate(job_id: str) -> dict[str, Any]:
    """Run one attempt of a job; RQ retries it when this raises a retryable failure."""
    if _runtime is None:
        raise RuntimeError("agents.jobs.generate runs only inside an agent (python -m agents)")
    return _runtime.call(_runtime.execute(job_id), timeout=_runtime.settings.job_timeout_s + 30)
