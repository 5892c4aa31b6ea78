"""Chat sessions: start one with its first message, then continue it message by message.

Each message is a job (poll `statusUrl`: the record's `reply`, and `images` when asked). The
first one runs on whichever slot takes it, which then holds the conversation in a tab of its
own; every follow-up is queued for that slot's worker alone, so the provider sees the whole
conversation. A follow-up whose slot is gone (its agent stopped or restarted) fails at once
with `AGENT_LOST` rather than waiting for a tab that no longer exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from fastapi import APIRouter, Request, status

from controller.audit import audit_targets
from controller.auth import JobsWrite
from controller.openapi import responses, success
from controller.ratelimit import LimitedRoute, limit, rate_limited
from controller.routes.webhooks import check_webhook
from controller.state import AppState, State
from controller.submission import Idempotency, IdempotencyKey, status_url
from semantest import attempts, keys
from semantest.chat_models import (
    CHAT_ID_MAX,
    ChatAccepted,
    ChatMessageRequest,
    ChatRecord,
    ChatRequest,
)
from semantest.chats import SLOT_GONE, ChatStore, worker_alive
from semantest.errors import Conflict, NotFound
from semantest.leases import return_slot_queue
from semantest.models import JobOptions, JobRecord
from semantest.plans import Endpoint

router = APIRouter(prefix="/chat", tags=["chat"], route_class=LimitedRoute)

#: A chat answer's example for the OpenAPI document.
_ACCEPTED_EXAMPLE = {
    "chatId": "5f0c3b1e9a7d4c2f8e6b1a0d9c8e7f6a",
    "jobId": "0123456789abcdef0123456789abcdef",
    "statusUrl": "http://127.0.0.1:8000/api/v1/images/status/0123456789abcdef0123456789abcdef",
}


def _chats(state: AppState) -> ChatStore:
    return ChatStore(state.redis, state.settings.chat_idle_s)


async def _submit(
    state: AppState,
    request: Request,
    record: JobRecord,
    answer: ChatAccepted,
    idempotency_key: str | None,
    slot_worker: str | None = None,
) -> ChatAccepted | None:
    """Store and queue one message's job; the first answer when this request is a repeat."""
    replay = await state.submitter.submit(
        [record],
        answer.model_dump(mode="json", by_alias=True),
        idempotency=await Idempotency.from_request(request, idempotency_key),
        slot_worker=slot_worker,
        tenant=record.tenant,
    )
    accepted = answer if replay is None else ChatAccepted.model_validate(replay.answer)
    audit_targets(request, chatId=accepted.chat_id, jobIds=[accepted.job_id])
    return None if replay is None else accepted


@router.post(
    "/new",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ChatAccepted,
    response_model_by_alias=True,
    responses=success(202, _ACCEPTED_EXAMPLE, description="Accepted")
    | responses(401, 409, 413, 422, 503)
    | rate_limited(),
    dependencies=[limit(Endpoint.CHAT_NEW)],
)
async def new_chat(
    body: ChatRequest,
    caller: JobsWrite,
    state: State,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> ChatAccepted:
    """Start a chat with a provider; its first message runs as a job (poll `statusUrl`).

    The reply's text comes in the job's `reply`, and an image in `images` when
    `generateImage` is true. Continue with `POST /api/v1/chat/{chatId}/messages` within
    `SEMANTEST_CHAT_IDLE_S` (default 600 s) of the last message.
    """
    check_webhook(body.webhook, state.settings)
    record = JobRecord(
        tenant=caller.tenant,
        provider=body.provider,
        prompt=body.message,
        options=JobOptions.model_validate(body.options.model_dump()),
        chat_id=uuid.uuid4().hex,
        generate_image=body.generate_image,
        webhook=body.webhook,
        idempotency_key=idempotency_key,
    )
    assert record.chat_id is not None
    chat = ChatRecord(
        id=record.chat_id,
        tenant=caller.tenant,
        provider=record.provider,
        first_job_id=record.id,
        webhook=body.webhook,
    )
    answer = ChatAccepted(
        chat_id=chat.id, job_id=record.id, status_url=status_url(state, record.id)
    )
    # The chat exists before its first message is on a queue: the agent reads it.
    await _chats(state).create(chat)
    try:
        replay = await _submit(state, request, record, answer, idempotency_key)
    except BaseException:
        await state.redis.delete(keys.chat(chat.id))
        raise
    if replay is not None:  # a repeat: the first request's chat stands, this one is unused
        await state.redis.delete(keys.chat(chat.id))
        return replay
    return answer


@router.post(
    "/{chat_id}/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ChatAccepted,
    response_model_by_alias=True,
    responses=success(202, _ACCEPTED_EXAMPLE, description="Accepted")
    | responses(401, 404, 409, 413, 422, 503)
    | rate_limited(),
    dependencies=[limit()],
)
async def send_message(
    chat_id: str,
    body: ChatMessageRequest,
    caller: JobsWrite,
    state: State,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> ChatAccepted:
    """Continue a chat: the message is typed into the same conversation, on the same slot.

    404 `NOT_FOUND` for a chat that is not the caller's, never existed, or ended (no message
    for `SEMANTEST_CHAT_IDLE_S`); 409 `CONFLICT` while its first message has not started. When
    the chat's browser slot is gone, the job fails at once with `AGENT_LOST` (not retryable).
    """
    chats = _chats(state)
    chat = await chats.get(chat_id) if len(chat_id) <= CHAT_ID_MAX else None
    if chat is None or chat.tenant != caller.tenant:
        raise NotFound(
            f"no chat {chat_id!r} (a chat ends {state.settings.chat_idle_s} s after its last "
            "message)",
            [{"field": "chatId", "reason": "unknown or ended"}],
        )
    if chat.worker is None:
        raise Conflict(
            f"chat {chat_id}'s first message (job {chat.first_job_id}) has not started yet; "
            "send the next one once it has"
        )
    record = JobRecord(
        tenant=caller.tenant,
        provider=chat.provider,
        prompt=body.message,
        options=JobOptions.model_validate(body.options.model_dump()),
        chat_id=chat.id,
        generate_image=body.generate_image,
        webhook=chat.webhook,
        idempotency_key=idempotency_key,
    )
    answer = ChatAccepted(
        chat_id=chat.id, job_id=record.id, status_url=status_url(state, record.id)
    )
    worker = chat.worker
    if not await worker_alive(state.redis, worker):
        # Its tab went with its browser: say so now rather than queue it for nobody.
        lost = attempts.Decision(retry=False, delay_s=0)
        attempts.record_failure(record, "AGENT_LOST", SLOT_GONE, lost)
        replay = await _submit(state, request, record, answer, idempotency_key)
        return replay or answer
    replay = await _submit(state, request, record, answer, idempotency_key, slot_worker=worker)
    if replay is not None:
        return replay
    if not await worker_alive(state.redis, worker):
        # It died while we queued: if the lease reaper has already been through its list, the
        # job would wait there forever. Back on its queue, the slot that takes it fails it.
        await asyncio.to_thread(return_slot_queue, state.redis_sync, worker, record.id)

    def touch(c: ChatRecord) -> None:
        c.last_used_at = time.time()

    with contextlib.suppress(KeyError):  # ended just now: the agent answers CHAT_ENDED
        await chats.update(chat.id, touch)
    return answer
