"""Webhooks: the caller's delivery attempts, and the check a request's webhook target passes.

Events are emitted where jobs end (`semantest/webhook_events.py`) and delivered by the webhook
worker (`semantest/webhook_worker.py`); this module only reads what the worker logged and
refuses, at submit time, a target the guard can already judge from the URL alone.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from controller.auth import JobsRead
from controller.openapi import responses, success
from controller.records import ID_PATTERN
from controller.state import State
from semantest.config import Settings
from semantest.errors import ValidationError
from semantest.models import WebhookTarget
from semantest.webhook_events import DeliveryAttempt, DeliveryPage, EventType, Outcome, deliveries
from semantest.webhooks import Guard

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

_EXAMPLE = DeliveryPage(
    deliveries=[
        DeliveryAttempt(
            id="evt_3f2a9c0e5b7d4e1f8a6c2b9d0e4f7a1c_succeeded",
            type=EventType.JOB_SUCCEEDED,
            job_id="3f2a9c0e5b7d4e1f8a6c2b9d0e4f7a1c",
            url="https://hooks.example.com/semantest",
            attempt=2,
            outcome=Outcome.DELIVERED,
            status_code=200,
            duration_ms=84,
            at=1767225620.5,
        ),
        DeliveryAttempt(
            id="evt_3f2a9c0e5b7d4e1f8a6c2b9d0e4f7a1c_succeeded",
            type=EventType.JOB_SUCCEEDED,
            job_id="3f2a9c0e5b7d4e1f8a6c2b9d0e4f7a1c",
            url="https://hooks.example.com/semantest",
            attempt=1,
            outcome=Outcome.RETRYING,
            status_code=503,
            duration_ms=112,
            at=1767225610.4,
            next_attempt_at=1767225620.4,
        ),
    ]
).model_dump(mode="json", by_alias=True)


def check_webhook(target: WebhookTarget | None, settings: Settings) -> None:
    """422 naming `webhook.url` when the guard refuses `target` by its URL alone (its scheme,
    or a host that is a refused address); names are checked again at every delivery."""
    if target is None:
        return
    why = Guard.from_settings(settings).check_literal(target.url)
    if why is not None:
        raise ValidationError(
            "invalid request: webhook.url", [{"field": "webhook.url", "reason": why}]
        )


@router.get(
    "/deliveries",
    response_model=DeliveryPage,
    response_model_by_alias=True,
    responses=success(200, _EXAMPLE, description="Delivery attempts, newest first.")
    | responses(401, 403, 422),
)
async def list_deliveries(
    caller: JobsRead,
    state: State,
    job_id: Annotated[str | None, Query(alias="jobId", pattern=ID_PATTERN)] = None,
    batch_id: Annotated[str | None, Query(alias="batchId", pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> DeliveryPage:
    """Your webhook delivery attempts, newest first (the last 1,000 are kept, 7 days): each
    with the event id (`webhook-id`), type, target, attempt number, outcome (`delivered`,
    `retrying`, `failed`), the receiver's status code or the error, and how long it took.
    Filter by `jobId` or `batchId`."""
    found = await deliveries(
        state.redis, caller.tenant, job_id=job_id, batch_id=batch_id, limit=limit
    )
    return DeliveryPage(deliveries=found)
