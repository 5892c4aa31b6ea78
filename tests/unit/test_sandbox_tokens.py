"""The sandbox's prompt tokens at the HTTP level: what each one makes the reply stream say."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from PIL import Image

from sandbox.app import SESSION_COOKIE, create_app
from sandbox.chat import LOGGED_OUT, REFUSAL, behaviour, ratelimit_notice

pytestmark = pytest.mark.unit


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(latency_ms=0))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as c:
        assert (await c.get("/chat")).cookies.get(SESSION_COOKIE) or c.cookies.get(SESSION_COOKIE)
        yield c


async def converse(client: httpx.AsyncClient, prompt: str) -> list[dict[str, object]]:
    async with client.stream("POST", "/api/conversation", json={"prompt": prompt}) as response:
        assert response.status_code == 200
        return [json.loads(line) async for line in response.aiter_lines() if line.strip()]


def test_tokens_parse_with_their_values() -> None:
    asked = behaviour("x [sandbox:images=3] [sandbox:slow=200] [sandbox:ratelimit=5] y")
    assert (asked.images, asked.slow_ms, asked.ratelimit_s) == (3, 200, 5)
    assert behaviour("[sandbox:images=9]").images == 4  # the page's own bound
    assert behaviour("plain prompt") == type(asked)()
    assert behaviour("[sandbox:refuse][sandbox:broken][sandbox:hang][sandbox:logout]").refuse


async def test_refuse_is_a_refused_error_every_time(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        events = await converse(client, "a boat [sandbox:refuse]")
        assert events[-1] == {"type": "error", "kind": "refused", "message": REFUSAL}


async def test_ratelimit_shows_its_wait_once_then_passes(client: httpx.AsyncClient) -> None:
    first = await converse(client, "a cat [sandbox:ratelimit=4]")
    assert first[-1] == {
        "type": "error",
        "kind": "rate-limited",
        "message": ratelimit_notice(4),
        "retryAfterS": 4,
    }
    assert "try again in 4 seconds" in ratelimit_notice(4)
    again = await converse(client, "a cat [sandbox:ratelimit=4]")
    assert again[-1] == {"type": "done"} and any(e["type"] == "image" for e in again)


async def test_logout_once_then_passes(client: httpx.AsyncClient) -> None:
    first = await converse(client, "a dog [sandbox:logout]")
    assert first[-1] == {"type": "error", "kind": "logged-out", "message": LOGGED_OUT}
    assert (await converse(client, "a dog [sandbox:logout]"))[-1] == {"type": "done"}


async def test_images_three_gives_three_different_pngs(client: httpx.AsyncClient) -> None:
    events = await converse(client, "fruit [sandbox:images=3]")
    urls = [str(e["url"]) for e in events if e["type"] == "image"]
    assert len(urls) == 3
    bodies = [(await client.get(u)).content for u in urls]
    assert len(set(bodies)) == 3


async def test_broken_serves_an_image_type_that_does_not_decode(client: httpx.AsyncClient) -> None:
    events = await converse(client, "glass [sandbox:broken]")
    (image,) = [e for e in events if e["type"] == "image"]
    assert str(image["url"]).endswith("?broken=1")
    reply = await client.get(str(image["url"]))
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    with pytest.raises(Exception):  # noqa: B017 - Pillow raises several kinds
        Image.open(io.BytesIO(reply.content)).load()


async def test_slow_streams_for_the_time_asked(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    events = await converse(client, "snail [sandbox:slow=600]")
    assert time.monotonic() - started >= 0.55
    assert events[-1] == {"type": "done"}
