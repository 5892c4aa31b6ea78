"""The webhook worker: an RQ worker of its own on the `webhooks` queue, off the agents' path.

`python -m semantest.webhook_worker` (which `semantest up` starts next to the controller) runs
an RQ `SimpleWorker` that delivers one event per RQ job with `deliver(event_id)`: sign it with
the tenant's current secret, post it through the SSRF guard, log the attempt. A 2xx answer
delivers it. Anything else is tried again after `SEMANTEST_WEBHOOK_BACKOFF_S` x 2^(n-1)
seconds, up to `SEMANTEST_WEBHOOK_MAX_ATTEMPTS`, by returning RQ's `Retry` (this function is
the one place that decides); a refused or malformed target is not retried. RQ parks a retry in
the queue's scheduled registry, and this process moves due ones back once a second (the
controller's scheduler serves only the agents' queues).

Run more of these processes to deliver more at once; each attempt is bounded by
`SEMANTEST_WEBHOOK_TIMEOUT_S`. Must not import the controller or the agents.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time

from redis.asyncio import Redis
from rq import Queue, SimpleWorker, get_current_job
from rq.job import Retry
from rq.scheduler import RQScheduler

from semantest import keys, metrics, webhooks
from semantest.config import Settings, get_settings
from semantest.logs import bound, configure_logging
from semantest.redis_clients import async_client, sync_client
from semantest.storage import Storage, storage_from_settings
from semantest.webhook_events import (
    DeliveryAttempt,
    EventType,
    Outcome,
    WebhookEvent,
    log_attempt,
    tenant_secret,
)

log = logging.getLogger(__name__)

#: Longest wait between two attempts.
MAX_BACKOFF_S = 3600


class DeliveryFailed(Exception):
    """The event was not delivered and will not be tried again (RQ marks its job failed)."""


def backoff_intervals(settings: Settings) -> list[int]:
    """Seconds before retry 1, 2, …: `webhook_backoff_s` doubling each time, at most an hour."""
    base = settings.webhook_backoff_s
    return [min(base * 2**n, MAX_BACKOFF_S) for n in range(settings.webhook_max_attempts - 1)]


def deliver(event_id: str) -> Retry | None:
    """RQ job: one delivery attempt of the event `event_id` (the n-th, counted by RQ)."""
    job = get_current_job()
    attempt = 1 + ((job.number_of_retries or 0) if job is not None else 0)
    settings = get_settings()
    return asyncio.run(_attempt(event_id, attempt, settings))


async def _attempt(event_id: str, attempt: int, settings: Settings) -> Retry | None:
    """Deliver once and log it: None when delivered (or gone), a `Retry` when it will be tried
    again, `DeliveryFailed` when it will not."""
    redis = async_client(settings.redis_url or "")
    try:
        raw = await redis.get(keys.webhook_event(event_id))
        if raw is None:
            log.warning("webhook event %s is gone (expired?); nothing to deliver", event_id)
            return None
        event = WebhookEvent.model_validate_json(raw)
        with bound(job_id=event.job_id):
            return await _deliver(redis, event, attempt, settings)
    finally:
        await redis.aclose()


async def _deliver(
    redis: Redis, event: WebhookEvent, attempt: int, settings: Settings
) -> Retry | None:
    """Sign, post and log one attempt of `event` (see `_attempt`)."""
    started = time.monotonic()
    secret = await tenant_secret(redis, event.tenant, settings)
    if secret is None:
        answer = webhooks.Answer(
            url=event.url,
            error=f"tenant {event.tenant} has no webhook secret "
            "(the admin tenant's is SEMANTEST_WEBHOOK_SECRET)",
        )
    else:
        content = webhooks.body(event.type.value, event.occurred_at, _present(event, settings))
        headers = webhooks.sign(secret, event.id, time.time(), content)
        guard = webhooks.Guard.from_settings(settings)
        answer = await webhooks.post(event.url, content, headers, guard, settings.webhook_timeout_s)
    intervals = backoff_intervals(settings)
    again = not answer.delivered and not answer.final and attempt <= len(intervals)
    delay = intervals[attempt - 1] if again else None
    record = DeliveryAttempt(
        id=event.id,
        type=event.type,
        job_id=event.job_id,
        batch_id=event.batch_id,
        url=event.url,
        final_url=answer.url if answer.url != event.url else None,
        attempt=attempt,
        outcome=Outcome.DELIVERED
        if answer.delivered
        else (Outcome.RETRYING if again else Outcome.FAILED),
        status_code=answer.status_code,
        error=answer.error,
        duration_ms=round((time.monotonic() - started) * 1000),
        at=time.time(),
        next_attempt_at=time.time() + delay if delay is not None else None,
    )
    await log_attempt(redis, event.tenant, record)
    metrics.WEBHOOK_DELIVERIES.labels(event.type.value, record.outcome.value).inc()
    metrics.WEBHOOK_DELIVERY_SECONDS.labels(record.outcome.value).observe(
        time.monotonic() - started
    )
    log.info(
        "webhook %s attempt %d to %s: %s %s",
        event.id,
        attempt,
        event.url,
        record.outcome.value,
        answer.status_code or answer.error,
    )
    if answer.delivered:
        return None
    if not again:
        raise DeliveryFailed(f"{event.id}: not delivered ({answer.error or answer.status_code})")
    return Retry(max=len(intervals), interval=intervals)


def _present(event: WebhookEvent, settings: Settings) -> dict[str, object]:
    """The event's data with image URLs filled, as the API serves records."""
    data = dict(event.data)
    records = data.get("jobs") if event.type is EventType.BATCH_COMPLETED else [data]
    storage = _storage(settings)
    for record in records if isinstance(records, list) else []:
        # failure evidence as the API serves it: URLs, never the server's paths
        base = f"{settings.controller_url}/api/v1/jobs/{record.get('id')}/artifacts"
        kept = record.get("artifacts") or {}
        record["artifacts"] = {name: f"{base}/{where}" for name, where in kept.items()}
        for entry in record.get("attemptHistory") or []:
            evidence = entry.get("evidence") or {}
            entry["evidence"] = {name: f"{base}/{where}" for name, where in evidence.items()}
        for image in record.get("images") or []:
            # the rule of controller.records.image_url: a CDN's URL, else the controller's
            image["url"] = (
                storage.public_url(image["key"])
                or f"{settings.controller_url}/api/v1/images/{image['key']}"
            )
    return data


_storage_of_process: list[Storage] = []


def _storage(settings: Settings) -> Storage:
    """One storage client per process (only its `public_url` is used)."""
    if not _storage_of_process:
        _storage_of_process.append(storage_from_settings(settings))
    return _storage_of_process[0]


def _schedule_retries(settings: Settings, stop: threading.Event) -> None:
    """Move due retries of the webhooks queue back onto it, once a second."""
    scheduler = RQScheduler([keys.WEBHOOK_QUEUE], connection=sync_client(settings.redis_url or ""))
    while not stop.wait(1.0):
        try:
            # RQ's scheduler methods carry no annotations, hence the ignores.
            if not scheduler.acquired_locks or scheduler.should_reacquire_locks:
                scheduler.acquire_locks()  # type: ignore[no-untyped-call]
            if scheduler.acquired_locks:
                scheduler.heartbeat()  # type: ignore[no-untyped-call]
                scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
        except Exception:
            log.exception("webhook retry scheduler pass failed; trying again")
    scheduler.release_locks()  # type: ignore[no-untyped-call]


def main() -> None:
    """Deliver webhooks until SIGTERM (RQ's warm shutdown: the attempt in hand finishes)."""
    settings = get_settings()
    configure_logging(settings.log_level, "webhooks", settings.log_format)
    if settings.redis_url is None:
        raise SystemExit("SEMANTEST_REDIS_URL is not set (semantest up sets it for you)")
    metrics.serve(settings, "webhooks", f"{socket.gethostname()}.{os.getpid()}")
    connection = sync_client(settings.redis_url)
    stop = threading.Event()
    scheduler = threading.Thread(
        target=_schedule_retries, args=(settings, stop), name="webhook-retries", daemon=True
    )
    scheduler.start()
    worker = SimpleWorker(
        [Queue(keys.WEBHOOK_QUEUE, connection=connection)],
        connection=connection,
        name=f"webhooks@{socket.gethostname()}.{os.getpid()}",
    )
    try:
        worker.work(logging_level=settings.log_level)
    finally:
        stop.set()
        scheduler.join(5)


if __name__ == "__main__":
    main()
