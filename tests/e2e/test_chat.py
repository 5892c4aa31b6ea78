"""Chat sessions end to end: real controller, agents with real Chromium, extension, addon, sandbox.

The sandbox numbers each reply in its conversation and quotes the previous message, so a reply
`reply #2 to: … (after #1: …)` proves the follow-up was typed into the same conversation — the
same tab — as the first message.

Only the bootstrap tenant exists so far (one admin key), so "another tenant's chat" cannot be
asked for yet; the route answers it exactly like an unknown chat (404 `NOT_FOUND`), which is
what `test_unknown_chats_are_not_found` holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from sandbox.render import render_png
from semantest import keys
from semantest.stack import Stack
from tests.e2e.conftest import client, stack_settings, wait_final

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def chat_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One agent with two slots: a follow-up must find its own slot among them."""
    settings = stack_settings(redis_url, 30, tmp_path_factory.mktemp("chat"), slots=2)
    with Stack(settings, agents=1, slots=2) as running:
        yield running


@pytest.fixture
def chat_api(chat_stack: Stack) -> Iterator[httpx.Client]:
    with client(chat_stack) as api:
        yield api


def start(api: httpx.Client, message: str, **extra: Any) -> dict[str, Any]:
    """POST /chat/new; the 202 body."""
    reply = api.post("/api/v1/chat/new", json={"message": message, "provider": "sandbox", **extra})
    assert reply.status_code == 202, reply.text
    body: dict[str, Any] = reply.json()
    assert body["statusUrl"].endswith(f"/api/v1/images/status/{body['jobId']}")
    return body


def say(api: httpx.Client, chat_id: str, message: str, **extra: Any) -> dict[str, Any]:
    """POST /chat/{chatId}/messages; the 202 body."""
    reply = api.post(f"/api/v1/chat/{chat_id}/messages", json={"message": message, **extra})
    assert reply.status_code == 202, reply.text
    body: dict[str, Any] = reply.json()
    assert body["chatId"] == chat_id
    return body


def answered(api: httpx.Client, job_id: str) -> dict[str, Any]:
    record = wait_final(api, job_id)
    assert record["status"] == "succeeded", record.get("error")
    return record


def chat_record(stack: Stack, chat_id: str) -> dict[str, Any]:
    r = redis.Redis.from_url(stack.settings.redis_url or "")
    try:
        raw = r.get(keys.chat(chat_id))
    finally:
        r.close()
    assert raw is not None, f"no chat record for {chat_id}"
    found: dict[str, Any] = json.loads(raw)
    return found


def test_follow_ups_continue_the_conversation_in_the_same_slot_and_tab(
    chat_api: httpx.Client, chat_stack: Stack
) -> None:
    tag = uuid.uuid4().hex[:6]
    first = start(chat_api, f"hello {tag}")
    other = start(chat_api, f"another chat {tag}")  # a second conversation alongside
    one = answered(chat_api, first["jobId"])
    assert one["reply"] == f"reply #1 to: hello {tag}."
    assert one["chatId"] == first["chatId"] and one["images"] == []
    assert one["generateImage"] is False
    slot = one["agent"]
    assert slot.startswith("agent-1/")
    bound = chat_record(chat_stack, first["chatId"])
    assert bound["worker"].startswith(f"{slot}@") and bound["slot"] == slot
    assert answered(chat_api, other["jobId"])["reply"] == f"reply #1 to: another chat {tag}."

    # Image jobs keep both slots busy meanwhile; the follow-ups still find their own tab.
    images = [
        chat_api.post("/api/v1/images/generate", json={"prompt": f"busy {i} {tag}"}).json()
        for i in range(4)
    ]
    second = say(chat_api, first["chatId"], f"tell me more {tag}")
    other_second = say(chat_api, other["chatId"], f"and you {tag}")
    two = answered(chat_api, second["jobId"])
    assert two["reply"] == f"reply #2 to: tell me more {tag} (after #1: hello {tag})."
    assert two["agent"] == slot
    other_two = answered(chat_api, other_second["jobId"])
    assert other_two["reply"] == f"reply #2 to: and you {tag} (after #1: another chat {tag})."
    for job in images:
        assert answered(chat_api, job["jobId"])["images"], "image jobs still get their images"

    third = answered(chat_api, say(chat_api, first["chatId"], f"once more {tag}")["jobId"])
    assert third["reply"] == f"reply #3 to: once more {tag} (after #2: tell me more {tag})."
    assert third["agent"] == slot
    assert chat_record(chat_stack, first["chatId"])["turns"] == 3


def test_a_message_asking_for_an_image_gets_the_sandbox_png(
    chat_api: httpx.Client, chat_stack: Stack
) -> None:
    tag = uuid.uuid4().hex[:6]
    opening = f"a kite over a field {tag}"
    first = answered(chat_api, start(chat_api, opening, generateImage=True)["jobId"])
    assert first["reply"] == f"reply #1 to: {opening}. Here is an image of {opening}."
    (image,) = first["images"]
    assert image["sha256"] == hashlib.sha256(render_png(opening)).hexdigest()

    message = f"now a red one {tag}"
    sent = say(chat_api, first["chatId"], message, generateImage=True)
    record = answered(chat_api, sent["jobId"])
    assert record["reply"].startswith(f"reply #2 to: {message} (after #1: {opening})")
    (image,) = record["images"]
    expected = render_png(message)
    assert image["sha256"] == hashlib.sha256(expected).hexdigest()
    served = chat_api.get(image["url"])
    assert served.status_code == 200 and served.content == expected
    assert (chat_stack.settings.images_dir / image["key"]).read_bytes() == expected


def test_unknown_chats_are_not_found(chat_api: httpx.Client) -> None:
    for chat_id in (uuid.uuid4().hex, "x" * 65):
        reply = chat_api.post(f"/api/v1/chat/{chat_id}/messages", json={"message": "hi"})
        assert reply.status_code == 404, reply.text
        assert reply.json()["error"]["code"] == "NOT_FOUND"


def test_bad_chat_requests_name_the_field(chat_api: httpx.Client) -> None:
    cases = [
        ({"message": "hi"}, "provider"),
        ({"message": "", "provider": "sandbox"}, "message"),
        ({"message": "hi", "provider": "sandbox", "options": {"cache": True}}, "options"),
        ({"message": "hi", "provider": "sandbox", "webhook": "ftp://x"}, "webhook"),
    ]
    for body, field in cases:
        reply = chat_api.post("/api/v1/chat/new", json=body)
        assert reply.status_code == 422, reply.text
        assert field in json.dumps(reply.json()["error"]["details"])


def test_a_repeated_request_with_an_idempotency_key_starts_one_chat(
    chat_api: httpx.Client, chat_stack: Stack
) -> None:
    body = {"message": f"only once {uuid.uuid4().hex[:6]}", "provider": "sandbox"}
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    first = chat_api.post("/api/v1/chat/new", json=body, headers=headers)
    again = chat_api.post("/api/v1/chat/new", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    record = answered(chat_api, first.json()["jobId"])
    assert record["reply"] == f"reply #1 to: {body['message']}."
    assert chat_record(chat_stack, first.json()["chatId"])["turns"] == 1


@pytest.fixture(scope="module")
def doomed_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An agent to kill under its chats (the pool restarts it, with another boot); chats end
    after 10 s without a message."""
    settings = stack_settings(
        redis_url, 31, tmp_path_factory.mktemp("chat-kill"), slots=2, chat_idle_s=10
    )
    with Stack(settings, agents=1, slots=2) as running:
        yield running


def agent_boot(api: httpx.Client) -> tuple[int, str] | None:
    agents = api.get("/api/v1/fleet").json()["agents"]
    return (agents[0]["pid"], agents[0]["boot"]) if agents else None


def test_a_follow_up_after_its_agent_died_fails_fast_with_agent_lost(
    doomed_stack: Stack,
) -> None:
    with client(doomed_stack) as api:
        tag = uuid.uuid4().hex[:6]
        chat = start(api, f"before the crash {tag}")
        answered(api, chat["jobId"])
        live = agent_boot(api)
        assert live is not None
        pid, boot = live

        os.kill(pid, signal.SIGKILL)
        # Sent at once, while the dead agent's heartbeat still looks alive: it waits in the
        # dead slot's list until the lease reaper hands it on, and the slot that takes it
        # fails it.
        queued = say(api, chat["chatId"], f"are you there {tag}")
        started = time.monotonic()
        record = wait_final(api, queued["jobId"], timeout=30)
        assert record["status"] == "failed"
        assert record["error"] == {
            "code": "AGENT_LOST",
            "message": "the chat's browser slot is gone; start a new chat",
            "retryable": False,
        }
        assert time.monotonic() - started < 20
        assert record["attempts"] <= 1

        # Once the controller knows the slot is gone, a follow-up fails as it is accepted.
        deadline = time.monotonic() + 30
        while (now := agent_boot(api)) is None or now[1] == boot:
            assert time.monotonic() < deadline, "the pool did not restart the agent"
            time.sleep(0.2)
        late = say(api, chat["chatId"], f"hello again {tag}")
        record = api.get(f"/api/v1/images/status/{late['jobId']}").json()
        assert record["status"] == "failed" and record["error"]["code"] == "AGENT_LOST"
        assert record["attempts"] == 0  # no browser was asked

        # A new chat works on the restarted agent.
        fresh = answered(api, start(api, f"after the crash {tag}")["jobId"])
        assert fresh["reply"] == f"reply #1 to: after the crash {tag}."


def test_an_idle_chat_ends_and_its_tab_closes(doomed_stack: Stack) -> None:
    with client(doomed_stack) as api:
        chat = start(api, f"soon idle {uuid.uuid4().hex[:6]}")
        answered(api, chat["jobId"])
        time.sleep(doomed_stack.settings.chat_idle_s + 1)
        reply = api.post(f"/api/v1/chat/{chat['chatId']}/messages", json={"message": "hi?"})
        assert reply.status_code == 404 and reply.json()["error"]["code"] == "NOT_FOUND"
        assert "ends 10 s after its last message" in reply.json()["error"]["message"]
        closed = f"chat {chat['chatId']} ended; closing its tab"
        deadline = time.monotonic() + 10  # the next heartbeat closes it
        while closed not in (doomed_stack.logs_dir / "agents.log").read_text():
            assert time.monotonic() < deadline, "the idle chat's tab was not closed"
            time.sleep(0.2)
