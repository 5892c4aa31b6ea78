"""The caller's jobs: list them (newest first, cursor-paginated) and cancel one."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Query

from controller.auth import JobsRead, JobsWrite
from controller.cancels import cancel_job
from controller.examples import JOB_CANCELED, JOB_PAGE
from controller.openapi import responses, success
from controller.ratelimit import LimitedRoute, limit, rate_limited
from controller.records import ID_PATTERN, present, present_all
from controller.routes.batches import load_batch
from controller.state import AppState, State
from semantest import keys
from semantest.errors import ValidationError
from semantest.models import JobPage, JobRecord, JobStatus

router = APIRouter(tags=["jobs"], route_class=LimitedRoute)

#: Records read per step while filtering a page, and at most per request.
_STEP = 200
_MAX_SCANNED = 2000


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobRecord,
    response_model_by_alias=True,
    responses=success(200, JOB_CANCELED, description="The canceled job.")
    | responses(401, 404, 409, example_code="JOB_NOT_FOUND")
    | rate_limited(),
    dependencies=[limit()],
)
async def cancel(job_id: str, caller: JobsWrite, state: State) -> JobRecord:
    """Cancel a job: a queued one never runs, a running one is stopped and its slot freed.

    A job that already finished (succeeded, failed or canceled) answers 409 `CONFLICT`.
    """
    return present(await cancel_job(state, caller.tenant, job_id), state)


@router.get(
    "/jobs",
    response_model=JobPage,
    response_model_by_alias=True,
    responses=success(200, JOB_PAGE, description="A page of jobs.")
    | responses(401, 404, 422)
    | rate_limited(),
    dependencies=[limit()],
)
async def list_jobs(
    caller: JobsRead,
    state: State,
    status: JobStatus | None = None,
    batch_id: Annotated[str | None, Query(alias="batchId", pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobPage:
    """The caller's jobs, newest first; pass `nextCursor` back as `cursor` for the next page."""
    if batch_id is not None:
        batch = await load_batch(state, caller.tenant, batch_id)
        ids = [str(i) for i in reversed(batch["jobIds"])]  # type: ignore[call-overload]
        start = _offset(cursor)
        page, scanned = await _filtered(state, ids[start:], status, limit)
        more = start + scanned < len(ids)
        return JobPage(
            jobs=present_all(page, state),
            next_cursor=_encode(str(start + scanned)) if more else None,
        )
    return await _from_index(state, caller.tenant, status, limit, cursor)


async def _from_index(
    state: AppState, tenant: str, status: JobStatus | None, limit: int, cursor: str | None
) -> JobPage:
    """Walk the tenant's job index (newest first) from just after the cursor's job."""
    index = keys.tenant_jobs(tenant)
    position = 0
    if cursor is not None:
        rank = await state.redis.zrevrank(index, _decode(cursor))
        if not isinstance(rank, int):
            raise _bad_cursor()
        position = rank + 1
    page: list[JobRecord] = []
    last: str | None = None
    scanned = 0
    while len(page) < limit and scanned < _MAX_SCANNED:
        members = await state.redis.zrevrange(index, position, position + _STEP - 1)
        ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        if not ids:
            return JobPage(jobs=present_all(page, state), next_cursor=None)
        records, used = await _filtered(state, ids, status, limit - len(page))
        page += records
        scanned += used
        position += used
        last = ids[used - 1]
        if used == len(ids) and len(ids) < _STEP:  # read to the end of the index
            return JobPage(jobs=present_all(page, state), next_cursor=None)
    return JobPage(jobs=present_all(page, state), next_cursor=_encode(last) if last else None)


async def _filtered(
    state: AppState, ids: list[str], status: JobStatus | None, want: int
) -> tuple[list[JobRecord], int]:
    """Up to `want` records among `ids` (in order) with `status`; and how many ids were used."""
    found: list[JobRecord] = []
    used = 0
    for chunk_start in range(0, len(ids), _STEP):
        chunk = ids[chunk_start : chunk_start + _STEP]
        for raw in await state.redis.mget([keys.job(i) for i in chunk]):
            used += 1
            if raw is None:
                continue  # expired
            record = JobRecord.from_json(raw)
            if status is None or record.status is status:
                found.append(record)
                if len(found) == want:
                    return found, used
    return found, used


def _encode(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):  # not base64, not ASCII, not UTF-8
        raise _bad_cursor() from None


def _bad_cursor() -> ValidationError:
    return ValidationError(
        "invalid cursor", [{"field": "cursor", "reason": "pass back a nextCursor unchanged"}]
    )


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    value = _decode(cursor)
    if not value.isdigit():
        raise _bad_cursor()
    return int(value)
