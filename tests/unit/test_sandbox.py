"""Unit tests of the sandbox provider: deterministic rendering and the HTTP conversation flow."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from sandbox.app import FAULT_MESSAGES, LATENCY_ENV, SESSION_COOKIE, create_app, reply_chunks
from sandbox.chat import Conversations, Turn, chat_reply
from sandbox.render import image_id, render_png

PROMPT = "a red fox reading a newspaper on the moon"


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with _client(create_app(latency_ms=0)) as c:
        yield c


async def _session(client: httpx.AsyncClient) -> None:
    response = await client.get("/chat")
    assert response.status_code == 200
    assert client.cookies.get(SESSION_COOKIE)


async def _converse(client: httpx.AsyncClient, prompt: str) -> list[dict[str, object]]:
    async with client.stream("POST", "/api/conversation", json={"prompt": prompt}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) async for line in response.aiter_lines() if line.strip()]


@pytest.mark.unit
def test_render_png_is_deterministic_and_prompt_specific() -> None:
    first = render_png(PROMPT)
    assert first == render_png(PROMPT)
    assert first != render_png(PROMPT + "!")
    with Image.open(io.BytesIO(first)) as image:
        assert image.format == "PNG"
        assert image.size == (512, 512)


@pytest.mark.unit
def test_render_png_handles_long_and_unicode_prompts() -> None:
    for prompt in ("x" * 4000, "猫が月で新聞を読む 🦊", "line\nbreaks\tand  spaces"):
        with Image.open(io.BytesIO(render_png(prompt, size=256))) as image:
            assert image.size == (256, 256)


@pytest.mark.unit
def test_image_id_is_sha256_prefix() -> None:
    assert image_id("abc") == "ba7816bf8f01cfea414140de5dae2223"
    assert len(image_id(PROMPT)) == 32


@pytest.mark.unit
@pytest.mark.parametrize("raw", ["abc", "1.5", "-3"])
def test_invalid_latency_env_names_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(LATENCY_ENV, raw)
    with pytest.raises(ValueError, match=LATENCY_ENV):
        create_app()


@pytest.mark.unit
async def test_latency_env_is_reported_by_health(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LATENCY_ENV, "250")
    async with _client(create_app()) as c:
        assert (await c.get("/health")).json() == {"ok": True, "latencyMs": 250}
    monkeypatch.delenv(LATENCY_ENV)
    async with _client(create_app()) as c:
        assert (await c.get("/health")).json() == {"ok": True, "latencyMs": 0}


@pytest.mark.unit
async def test_chat_page_sets_session_cookie_and_nonce_csp(client: httpx.AsyncClient) -> None:
    response = await client.get("/chat")
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/" in cookie
    csp = response.headers["content-security-policy"]
    nonce = csp.split("script-src 'nonce-", 1)[1].split("'", 1)[0]
    assert f'<script nonce="{nonce}">' in response.text
    assert "img-src 'self' data: blob:" in csp
    for marker in ('id="thread"', 'id="composer"', 'contenteditable="true"', 'id="send"'):
        assert marker in response.text
    # An existing session is kept, and every page gets a fresh nonce.
    again = await client.get("/chat")
    assert "set-cookie" not in again.headers
    assert again.headers["content-security-policy"] != csp


@pytest.mark.unit
async def test_conversation_requires_session(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/conversation", json={"prompt": PROMPT})
    assert response.status_code == 403
    assert response.json() == {"error": "no session"}


@pytest.mark.unit
async def test_conversation_streams_deltas_then_image_then_done(
    client: httpx.AsyncClient,
) -> None:
    await _session(client)
    events = await _converse(client, PROMPT)
    deltas = [e for e in events if e["type"] == "delta"]
    assert len(deltas) >= 2
    assert "".join(str(e["text"]) for e in deltas) == f"Here is an image of {PROMPT}."
    assert events[: len(deltas)] == deltas
    image, done = events[-2:]
    assert image == {
        "type": "image",
        "url": f"/img/{image_id(PROMPT)}.png",
        "width": 512,
        "height": 512,
    }
    assert done == {"type": "done"}

    fetched = await client.get(str(image["url"]))
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.content == render_png(PROMPT)
    assert (await client.get(str(image["url"]))).content == fetched.content


@pytest.mark.unit
async def test_image_route_requires_session_and_known_id(client: httpx.AsyncClient) -> None:
    await _session(client)
    url = str((await _converse(client, PROMPT))[-2]["url"])
    assert (await client.get(f"/img/{'0' * 32}.png")).status_code == 404
    client.cookies.clear()
    response = await client.get(url)
    assert response.status_code == 403
    assert response.json() == {"error": "no session"}


@pytest.mark.unit
@pytest.mark.parametrize("prompt", ["", "x" * 4001])
async def test_prompt_length_is_validated(client: httpx.AsyncClient, prompt: str) -> None:
    await _session(client)
    response = await client.post("/api/conversation", json={"prompt": prompt})
    assert response.status_code == 422


@pytest.mark.unit
async def test_latency_is_spent_before_the_image_line() -> None:
    async with _client(create_app(latency_ms=150)) as c:
        await _session(c)
        started = time.monotonic()
        events = await _converse(c, PROMPT)
        elapsed = time.monotonic() - started
    assert events[-1] == {"type": "done"}
    assert 0.14 <= elapsed < 1.0


@pytest.mark.unit
def test_reply_chunks_rejoin_and_truncate_long_prompts() -> None:
    chunks = reply_chunks("  a   cat ")
    assert "".join(chunks) == "Here is an image of a cat."
    assert 2 <= len(chunks) <= 5
    assert len("".join(reply_chunks("y" * 4000))) < 200


@pytest.mark.unit
async def test_injected_faults_fail_the_next_replies_then_clear(client: httpx.AsyncClient) -> None:
    await _session(client)
    bad = await client.post("/_sandbox/faults", json={"kind": "meltdown"})
    assert bad.status_code == 422 and "kind" in bad.text
    added = await client.post("/_sandbox/faults", json={"kind": "server", "count": 2})
    assert added.json() == {"pending": ["server", "server"]}
    await client.post("/_sandbox/faults", json={"kind": "refusal"})
    for kind, message in [("server", FAULT_MESSAGES["server"])] * 2 + [
        ("refused", FAULT_MESSAGES["refusal"])
    ]:
        events = await _converse(client, PROMPT)
        assert events[0]["type"] == "delta"
        assert events[-1] == {"type": "error", "kind": kind, "message": message}
        assert all(e["type"] != "image" for e in events)
    assert (await client.get("/_sandbox/faults")).json() == {"pending": []}
    assert (await _converse(client, PROMPT))[-1] == {"type": "done"}


async def _say(
    client: httpx.AsyncClient, message: str, conversation: str, image: bool
) -> tuple[str, list[dict[str, object]]]:
    """One chat message: the reply text and the non-delta events."""
    body = {"prompt": message, "conversationId": conversation, "image": image}
    async with client.stream("POST", "/api/conversation", json=body) as response:
        assert response.status_code == 200
        events = [json.loads(line) async for line in response.aiter_lines() if line.strip()]
    text = "".join(str(e["text"]) for e in events if e["type"] == "delta")
    return text, [e for e in events if e["type"] != "delta"]


@pytest.mark.unit
async def test_a_conversation_numbers_its_replies_and_quotes_the_previous_message(
    client: httpx.AsyncClient,
) -> None:
    await _session(client)
    first, rest = await _say(client, "hello there", "c1", image=False)
    assert first == "reply #1 to: hello there."
    assert rest == [{"type": "done"}]  # no image asked, none sent
    second, _ = await _say(client, "and  a   second", "c1", image=False)
    assert second == "reply #2 to: and a second (after #1: hello there)."
    # Another conversation of the same session starts again at #1.
    other, _ = await _say(client, "fresh start", "c2", image=False)
    assert other == "reply #1 to: fresh start."
    third, _ = await _say(client, "third", "c1", image=False)
    assert third == "reply #3 to: third (after #2: and a second)."


@pytest.mark.unit
async def test_conversations_belong_to_their_session() -> None:
    app = create_app(latency_ms=0)
    async with _client(app) as alice, _client(app) as bob:
        await _session(alice)
        await _session(bob)
        await _say(alice, "alice's first", "same-id", image=False)
        text, _ = await _say(bob, "bob's first", "same-id", image=False)
    assert text == "reply #1 to: bob's first."


@pytest.mark.unit
async def test_a_chat_message_asking_for_an_image_gets_the_rendered_png(
    client: httpx.AsyncClient,
) -> None:
    await _session(client)
    await _say(client, "warm up", "c3", image=False)
    text, rest = await _say(client, PROMPT, "c3", image=True)
    assert text == f"reply #2 to: {PROMPT} (after #1: warm up). Here is an image of {PROMPT}."
    image, done = rest
    assert image["url"] == f"/img/{image_id(PROMPT)}.png" and done == {"type": "done"}
    assert (await client.get(str(image["url"]))).content == render_png(PROMPT)


@pytest.mark.unit
async def test_conversation_id_is_validated(client: httpx.AsyncClient) -> None:
    await _session(client)
    body = {"prompt": "x", "conversationId": "no spaces allowed"}
    response = await client.post("/api/conversation", json=body)
    assert response.status_code == 422 and "conversationId" in response.text


@pytest.mark.unit
def test_chat_replies_cut_long_messages() -> None:
    long = "z" * 4000
    turn = Turn(number=9, message=long, previous=long)
    reply = chat_reply(turn, image=True)
    assert reply.startswith("reply #9 to: zzz") and "(after #8: zzz" in reply
    assert len(reply) < 400


@pytest.mark.unit
def test_conversations_are_bounded() -> None:
    seen = Conversations(max_conversations=2)
    for conversation in ("a", "b", "c"):
        seen.add("s", conversation, "m")
    assert seen.add("s", "a", "again").number == 1  # "a" was the oldest: forgotten
    assert seen.add("s", "c", "again") == Turn(2, "again", "m")
