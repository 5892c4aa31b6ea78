"""The submitter's fast RQ job hash is exactly what RQ itself builds (but the timestamps)."""

from __future__ import annotations

import zlib

from redis.asyncio import Redis

from controller.submission import Submitter
from semantest.config import Settings
from semantest.models import JobRecord, Priority


def test_rq_job_template_matches_rq() -> None:
    submitter = Submitter(Redis(), Settings(chromium=None, job_timeout_s=90))
    for priority in Priority:
        record = JobRecord(tenant="t", provider="sandbox", prompt="p", priority=priority)
        fast, fast_data = submitter._rq_job(record)
        rq, rq_data = submitter.rq_job_fields(f"semantest.sandbox.{priority.value}", record.id)
        stamps = {"created_at", "enqueued_at"}
        assert {k: v for k, v in fast.items() if k not in stamps} == {
            k: v for k, v in rq.items() if k not in stamps
        }
        assert set(fast) == set(rq) and record.id in fast["description"]
        assert zlib.decompress(fast_data) == zlib.decompress(rq_data)
        assert (
            fast["timeout"] == 90 + 60 and fast["origin"] == f"semantest.sandbox.{priority.value}"
        )
