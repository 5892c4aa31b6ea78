"""The one authority on whether a job runs again: attempts, back-off, and how an attempt ends.

Every path that ends an attempt goes through `decide()` — the agent when its attempt fails, the
lease reaper when an agent stops heart-beating, RQ's failure callback when RQ itself finds an
abandoned job — so they can never disagree. The record's `attempts` (incremented when an
attempt takes its lease) is the only counter. RQ follows the decision rather than keeping its
own: jobs are enqueued without an RQ `Retry`; an attempt that should run again returns
`rq.Retry(interval=delay)` (RQ schedules it), one that should not raises `AttemptFailed`
(RQ marks the job failed and moves it to its failed registry), so RQ's state agrees with ours.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass

from semantest import routing
from semantest.config import Settings
from semantest.models import AttemptEntry, JobError, JobRecord, JobStatus

#: Statuses of an attempt that has taken its lease but not yet recorded how it ended.
IN_FLIGHT = (JobStatus.LEASED, JobStatus.RUNNING)


@dataclass(frozen=True)
class Decision:
    """What happens after an attempt failed."""

    retry: bool
    #: Seconds before the next attempt (when `retry`).
    delay_s: int


def decide(
    record: JobRecord,
    retryable: bool,
    settings: Settings,
    *,
    at_once: bool = False,
    wait_s: int | None = None,
) -> Decision:
    """Run again only for a retryable failure with attempts left; back-off by attempt number.

    `at_once` skips the back-off: for an agent that died, which says nothing about the job or
    the provider (the job goes back to the front of its queue). `wait_s` is the wait the
    provider asked for (a rate-limit notice's): the retry waits at least that long, at most
    `SEMANTEST_RATE_LIMIT_MAX_WAIT_S`.
    """
    retry = retryable and record.attempts < settings.max_attempts
    backoff = settings.retry_backoff_s
    delay = 0 if at_once else backoff[min(max(record.attempts - 1, 0), len(backoff) - 1)]
    if wait_s is not None:
        # RQ schedules in whole seconds (it may run a job up to 1 s before its time): one
        # more, so the retry never comes before the notice's wait is over.
        delay = max(delay, min(wait_s, settings.rate_limit_max_wait_s) + 1)
    return Decision(retry=retry, delay_s=delay if retry else 0)


def record_failure(
    record: JobRecord,
    code: str,
    message: str,
    decision: Decision,
    artifacts: dict[str, str] | None = None,
) -> None:
    """Apply a failed attempt's outcome to `record` (inside a `JobStore.update`).

    The attempt joins the record's history (provider, agent, error, evidence); `artifacts`
    becomes this attempt's evidence (`<attempt>/<file>` under the job's artifact folder).
    """
    record.error = JobError(code=code, message=message, retryable=decision.retry)
    if artifacts:
        record.artifacts = dict(artifacts)
    record.attempt_history.append(
        AttemptEntry(
            attempt=record.attempts,
            provider=record.provider,
            agent=record.agent,
            error=record.error,
            evidence=dict(artifacts or {}),
        )
    )
    record.lease = None
    if decision.retry:
        record.status = JobStatus.RETRYING
    else:
        record.status = JobStatus.FAILED
        record.finished_at = time.time()


#: Failures of the provider rather than of our agent: a job with other candidate providers
#: fails over to the next one (`semantest.routing`).
PROVIDER_FAULTS = frozenset(
    {
        "PROVIDER_RATE_LIMITED",
        "PROVIDER_LOGGED_OUT",
        "PROVIDER_ERROR",
        "TIMEOUT",
        "PAGE_CHANGED",
        "COMPOSER_STUCK",
        "IMAGE_LOAD_FAILED",
        "CAPTURE_FAILED",
    }
)


def fail_over(
    record: JobRecord,
    code: str,
    degraded: Collection[str],
    capacity: Collection[str] | None = None,
) -> str | None:
    """After `record_failure`: a retrying job with candidate providers moves to the next one
    not tried yet, not degraded and with a live slot (its record's `provider` changes); the new
    provider, or None when the job stays where it is."""
    if record.status is not JobStatus.RETRYING or not record.providers:
        return None
    if code not in PROVIDER_FAULTS:
        return None
    tried = {entry.provider for entry in record.attempt_history}
    target = routing.next_candidate(record.providers, tried, degraded, capacity)
    if target is None or target == record.provider:
        return None
    record.provider = target
    return target


def requeue_uncharged(record: JobRecord, reason: str) -> None:
    """Give the attempt back: the job waits for another agent and the attempt is not counted.

    For attempts that ended through no fault of the job (the agent drained on SIGTERM).
    """
    record.attempts = max(0, record.attempts - 1)
    record.status = JobStatus.QUEUED
    record.lease = None
    record.error = JobError(code="AGENT_LOST", message=reason, retryable=True)


class AttemptFailed(Exception):
    """Raised out of RQ's job function after the attempt recorded a final failure.

    RQ then marks its job failed; the failure callback recognises this class and leaves the
    (already final) record alone.
    """
