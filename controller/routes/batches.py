"""Batches: up to 100 prompts in one request, their summary, and canceling them."""

from __future__ import annotations

import contextlib
import json
import time
import uuid

from fastapi import APIRouter, Request, status

from controller.audit import audit_targets
from controller.auth import JobsRead, JobsWrite
from controller.cancels import cancel_job
from controller.examples import BATCH_ACCEPTED, BATCH_SUMMARY
from controller.openapi import responses, success
from controller.ratelimit import LimitedRoute, limit, rate_limited
from controller.records import present_all
from controller.routes.webhooks import check_webhook
from controller.state import AppState, State
from controller.submission import Idempotency, IdempotencyKey
from semantest import keys, routing
from semantest.errors import Conflict, NotFound
from semantest.models import (
    BatchAccepted,
    BatchRequest,
    BatchStatus,
    BatchSummary,
    JobRecord,
    JobStatus,
)
from semantest.plans import Endpoint

router = APIRouter(tags=["batches"], route_class=LimitedRoute)


async def _submit(
    body: BatchRequest, caller: JobsWrite, state: State, request: Request, key: str | None
) -> BatchAccepted:
    check_webhook(body.webhook, state.settings)
    batch_id = uuid.uuid4().hex
    records = [
        JobRecord(
            tenant=caller.tenant,
            provider=(wanted := routing.candidates(item.provider or body.provider))[0],
            providers=wanted if len(wanted) > 1 else [],
            prompt=item.prompt,
            options=item.options or body.options,
            priority=body.priority,
            batch_id=batch_id,
            idempotency_key=key,
        )
        for item in body.items()
    ]
    answer = BatchAccepted(
        batch_id=batch_id,
        job_ids=[r.id for r in records],
        status_url=f"{state.settings.controller_url}/api/v1/batches/{batch_id}",
    )
    batch = {
        "id": batch_id,
        "tenant": caller.tenant,
        "jobIds": answer.job_ids,
        "createdAt": time.time(),
        "webhook": body.webhook.model_dump() if body.webhook else None,
    }
    replay = await state.submitter.submit(
        records,
        answer.model_dump(mode="json", by_alias=True),
        idempotency=await Idempotency.from_request(request, key),
        batch=batch,
        tenant=caller.tenant,
    )
    accepted = answer if replay is None else BatchAccepted.model_validate(replay.answer)
    audit_targets(request, batchId=accepted.batch_id, jobIds=accepted.job_ids)
    return accepted


_SUBMIT = {
    "status_code": status.HTTP_202_ACCEPTED,
    "response_model": BatchAccepted,
    "response_model_by_alias": True,
    "responses": success(202, BATCH_ACCEPTED, description="Queued.")
    | responses(401, 409, 413, 422, 503)
    | rate_limited(),
    "dependencies": [limit(Endpoint.BATCH)],
}


@router.post("/images/batch", **_SUBMIT)  # type: ignore[arg-type]
async def submit_batch(
    body: BatchRequest,
    caller: JobsWrite,
    state: State,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> BatchAccepted:
    """Queue 1-100 prompts as one batch; identical prompts (same provider and options) run once.

    Each item is a prompt string or `{prompt, provider?, options?}`; the batch's `provider` and
    `options` are the defaults. Poll `statusUrl` for the summary.
    """
    return await _submit(body, caller, state, request, idempotency_key)


@router.post("/batch/generate", **_SUBMIT)  # type: ignore[arg-type]
async def submit_batch_alias(
    body: BatchRequest,
    caller: JobsWrite,
    state: State,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> BatchAccepted:
    """Alias of `POST /api/v1/images/batch`."""
    return await _submit(body, caller, state, request, idempotency_key)


async def load_batch(state: AppState, tenant: str, batch_id: str) -> dict[str, object]:
    """The stored batch, or `NotFound` (also for another tenant's)."""
    raw = await state.redis.get(keys.batch(batch_id)) if len(batch_id) <= 64 else None
    batch = json.loads(raw) if raw else None
    if batch is None or batch["tenant"] != tenant:
        raise NotFound(f"no batch {batch_id!r}")
    return batch  # type: ignore[no-any-return]


async def batch_records(
    state: AppState, batch: dict[str, object]
) -> tuple[list[str], list[JobRecord]]:
    """The batch's job ids, and the records of those not expired."""
    ids = [str(i) for i in batch["jobIds"]]  # type: ignore[attr-defined]
    raw = await state.redis.mget([keys.job(i) for i in ids])
    return ids, [JobRecord.from_json(r) for r in raw if r is not None]


async def summary(state: AppState, batch: dict[str, object]) -> BatchSummary:
    """Counts by status and progress of a batch, read from its jobs' records."""
    ids, records = await batch_records(state, batch)
    counts = {s.value: 0 for s in JobStatus}
    for r in records:
        counts[r.status.value] += 1
    done = all(r.status.terminal for r in records)
    started = any(r.status is not JobStatus.QUEUED for r in records)
    progress = round(sum(100 if r.status.terminal else r.progress for r in records) / len(ids))
    return BatchSummary(
        batch_id=str(batch["id"]),
        status=BatchStatus.COMPLETED
        if done
        else (BatchStatus.RUNNING if started else BatchStatus.QUEUED),
        total=len(ids),
        counts=counts,
        progress=progress,
        done=done,
        created_at=float(batch["createdAt"]),  # type: ignore[arg-type]
        jobs=present_all(records, state),
    )


@router.get(
    "/batches/{batch_id}",
    response_model=BatchSummary,
    response_model_by_alias=True,
    responses=success(200, BATCH_SUMMARY, description="The batch.")
    | responses(401, 404)
    | rate_limited(),
    dependencies=[limit()],
)
async def batch_status(batch_id: str, caller: JobsRead, state: State) -> BatchSummary:
    """The batch: counts by status, progress (0-100), whether it is done, and its jobs."""
    return await summary(state, await load_batch(state, caller.tenant, batch_id))


@router.post(
    "/batches/{batch_id}/cancel",
    response_model=BatchSummary,
    response_model_by_alias=True,
    responses=success(200, BATCH_SUMMARY, description="The batch after canceling.")
    | responses(401, 404)
    | rate_limited(),
    dependencies=[limit()],
)
async def cancel_batch(batch_id: str, caller: JobsWrite, state: State) -> BatchSummary:
    """Cancel every job of the batch that is not final yet; final ones keep their status."""
    batch = await load_batch(state, caller.tenant, batch_id)
    _ids, records = await batch_records(state, batch)
    # followers first, so canceling their leader does not hand them on
    for record in sorted(records, key=lambda r: r.same_as is None):
        if not record.status.terminal:
            with contextlib.suppress(Conflict):  # it finished meanwhile
                await cancel_job(state, caller.tenant, record.id)
    return await summary(state, batch)
