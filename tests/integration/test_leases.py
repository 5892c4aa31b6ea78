"""Record fencing and the retry policy against a real redis-server.

Each test reproduces one way a stale attempt or a second retry counter could corrupt a job.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from semantest import attempts
from semantest.config import Settings
from semantest.jobstore import JobStore, StaleLease
from semantest.models import JobRecord, JobStatus

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[JobStore]:
    redis = Redis.from_url(redis_url.rsplit("/", 1)[0] + "/5")
    yield JobStore(redis)
    await redis.aclose()


async def new_job(store: JobStore) -> JobRecord:
    record = JobRecord(tenant="t", provider="sandbox", prompt=f"p {uuid.uuid4().hex}")
    await store.create(record)
    return record


def lease_to(worker: str):  # type: ignore[no-untyped-def]
    def take(r: JobRecord) -> None:
        r.attempts += 1
        r.status, r.lease = JobStatus.RUNNING, f"{worker}#{r.attempts}"

    return take


async def test_a_stale_attempt_cannot_overwrite_the_live_one(store: JobStore) -> None:
    job = await new_job(store)
    first = await store.update(job.id, lease_to("a/0@1"))
    # the reaper ends the first attempt (its agent stopped heart-beating)…
    settings = Settings(max_attempts=3)
    await store.update(
        job.id,
        lambda r: attempts.record_failure(
            r, "AGENT_LOST", "gone", attempts.decide(r, True, settings)
        ),
    )
    # …and a second attempt takes the job
    second = await store.update(job.id, lease_to("b/0@2"))
    assert second.lease == "b/0@2#2"

    def succeed(r: JobRecord) -> None:
        r.status = JobStatus.SUCCEEDED

    # the first attempt wakes up and tries to record progress, then success: both refused
    with pytest.raises(StaleLease):
        await store.update(job.id, lambda r: setattr(r, "progress", 50), lease=first.lease)
    with pytest.raises(StaleLease):
        await store.update(job.id, succeed, lease=first.lease)
    current = await store.get(job.id)
    assert current is not None
    assert current.status is JobStatus.RUNNING and current.lease == "b/0@2#2"
    assert current.progress == 0
    # the live attempt writes fine
    await store.update(job.id, succeed, lease=second.lease)
    done = await store.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED


async def test_one_counter_decides_retries_and_the_last_attempt_fails(store: JobStore) -> None:
    settings = Settings(max_attempts=2, retry_backoff_s=[3, 7])
    job = await new_job(store)
    decisions = []
    for worker in ("a/0@1", "b/0@2"):
        await store.update(job.id, lease_to(worker))

        def fail(r: JobRecord) -> None:
            decision = attempts.decide(r, True, settings)
            attempts.record_failure(r, "TIMEOUT", "slow", decision)
            decisions.append(decision)

        await store.update(job.id, fail)
    assert decisions == [attempts.Decision(True, 3), attempts.Decision(False, 0)]
    final = await store.get(job.id)
    assert final is not None and final.status is JobStatus.FAILED and final.attempts == 2
    assert final.error is not None and final.error.retryable is False


async def test_a_drained_attempt_is_given_back_without_using_an_attempt(store: JobStore) -> None:
    job = await new_job(store)
    taken = await store.update(job.id, lease_to("a/0@1"))
    await store.update(
        job.id, lambda r: attempts.requeue_uncharged(r, "draining"), lease=taken.lease
    )
    back = await store.get(job.id)
    assert back is not None
    assert (back.status, back.attempts, back.lease) == (JobStatus.QUEUED, 0, None)


def test_non_retryable_failures_never_retry() -> None:
    record = JobRecord(tenant="t", provider="sandbox", prompt="p", attempts=1)
    assert attempts.decide(record, False, Settings(max_attempts=5)).retry is False
