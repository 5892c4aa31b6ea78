"""Example answers of the job routes for `/openapi.json`, built from the models so they validate.

Routes use them as `responses=success(202, GENERATE_ACCEPTED) | responses(...)`. Must not
import the route modules.
"""

from __future__ import annotations

from typing import Any

from semantest.models import (
    BatchAccepted,
    BatchStatus,
    BatchSummary,
    GenerateAccepted,
    ImageRecord,
    JobOptions,
    JobPage,
    JobRecord,
    JobStatus,
    Stage,
)

_BASE = "http://127.0.0.1:8000/api/v1"
_JOB_ID = "3f2a9c0e5b7d4e1f8a6c2b9d0e4f7a1c"
_BATCH_ID = "b7e5de91ec124997ab97483ac785a16c"
_SHA = "5d41402abc4b2a76b9719d911017c592" * 2


def _json(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True)


_SUCCEEDED = JobRecord(
    id=_JOB_ID,
    tenant="admin",
    provider="sandbox",
    prompt="a tiny robot watering a bonsai",
    options=JobOptions(size="1024x1024"),
    status=JobStatus.SUCCEEDED,
    progress=100,
    stage=Stage.DONE,
    attempts=1,
    created_at=1764081600.0,
    started_at=1764081600.4,
    finished_at=1764081603.1,
    agent="agent-1/0",
    images=[
        ImageRecord(
            url=f"{_BASE}/images/admin/{_SHA}.png",
            key=f"admin/{_SHA}.png",
            sha256=_SHA,
            width=1024,
            height=1024,
            content_type="image/png",
            bytes=48213,
        )
    ],
)
_QUEUED = JobRecord(
    id="0123abcd0123abcd0123abcd0123abcd",
    tenant="admin",
    provider="sandbox",
    prompt="a lighthouse at dawn",
    created_at=1764081601.0,
    batch_id=_BATCH_ID,
)
_CANCELED = _SUCCEEDED.model_copy(
    update={
        "status": JobStatus.CANCELED,
        "stage": Stage.QUEUED,
        "progress": 0,
        "images": [],
        "started_at": None,
        "agent": None,
        "attempts": 0,
    }
)

GENERATE_ACCEPTED = _json(
    GenerateAccepted(
        job_id=_JOB_ID, status=JobStatus.QUEUED, status_url=f"{_BASE}/images/status/{_JOB_ID}"
    )
)
JOB_RECORD = _json(_SUCCEEDED)
JOB_CANCELED = _json(_CANCELED)
BATCH_ACCEPTED = _json(
    BatchAccepted(
        batch_id=_BATCH_ID,
        job_ids=[_JOB_ID, _QUEUED.id],
        status_url=f"{_BASE}/batches/{_BATCH_ID}",
    )
)
BATCH_SUMMARY = _json(
    BatchSummary(
        batch_id=_BATCH_ID,
        status=BatchStatus.RUNNING,
        total=2,
        counts={s.value: 0 for s in JobStatus} | {"succeeded": 1, "queued": 1},
        progress=50,
        done=False,
        created_at=1764081600.0,
        jobs=[_SUCCEEDED.model_copy(update={"batch_id": _BATCH_ID}), _QUEUED],
    )
)
JOB_PAGE = _json(
    JobPage(jobs=[_SUCCEEDED], next_cursor="M2YyYTljMGU1YjdkNGUxZjhhNmMyYjlkMGU0ZjdhMWM")
)
