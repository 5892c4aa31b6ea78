"""The sandbox provider's HTTP app: chat page, streamed conversation API and image route.

It imitates the parts of a real image-chat provider that automation has to cope with: a
session cookie, a nonce-only script CSP, a streamed reply with configurable latency, and
images that are only served to the session.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from sandbox.chat import (
    LOGGED_OUT,
    REFUSAL,
    Behaviour,
    Conversations,
    FirstTimes,
    behaviour,
    chat_reply,
    image_reply,
    ratelimit_notice,
)
from sandbox.page import chat_page_html
from sandbox.render import ImageSpec
from sandbox.store import ImageStore

LATENCY_ENV = "SEMANTEST_SANDBOX_LATENCY_MS"
#: The id `semantest up` gives its run; `/health` echoes it so the stack knows its own sandbox.
RUN_ID_ENV = "SEMANTEST_RUN_ID"
SESSION_COOKIE = "sandbox_session"
IMAGE_SIZE = 512
#: Sizes the sandbox renders: WxH, each side 64 to 2048 pixels (what the API's schema allows).
SIDE = r"(6[4-9]|[7-9][0-9]|[1-9][0-9]{2}|1[0-9]{3}|20[0-3][0-9]|204[0-8])"
SIZE_PATTERN = rf"^{SIDE}x{SIDE}$"
MAX_IMAGES = 4
MAX_PROMPT_CHARS = 4000
_DELTA_COUNT = 5


#: What each injectable fault looks like in the reply stream, worded as real providers word it.
FAULT_MESSAGES = {
    "server": "503 upstream overloaded, please try again",
    "ratelimit": "429 too many requests, slow down",
    "refusal": "This prompt may violate our content policy.",
    # "hang": no message — the reply starts streaming and never finishes
}
#: The `kind` of the stream's error line for each fault (the page marks the turn with it).
FAULT_KINDS = {"server": "server", "ratelimit": "rate-limited", "refusal": "refused"}


class FaultsIn(BaseModel):
    """Body of ``POST /_sandbox/faults``: the next ``count`` replies fail with ``kind``."""

    kind: Literal["server", "ratelimit", "refusal", "hang"]
    count: Annotated[int, Field(ge=0, le=1000)] = 1


class ConversationIn(BaseModel):
    """Body of ``POST /api/conversation``.

    Without ``conversationId`` the prompt is a one-off image request (the reply is
    ``Here is an image of …``); with one, it is the next message of that conversation and the
    reply depends on the messages before it. ``image: false`` asks for a text reply only.
    The image settings of the page (``count``, ``size``, ``style``, ``model``) shape the images.
    """

    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
    conversation_id: Annotated[
        str | None, Field(alias="conversationId", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    ] = None
    image: bool = True
    count: Annotated[int, Field(ge=1, le=MAX_IMAGES)] = 1
    size: Annotated[str | None, Field(pattern=SIZE_PATTERN)] = None
    style: Annotated[str | None, Field(max_length=100)] = None
    model: Annotated[str | None, Field(max_length=100)] = None

    def images(self, count: int | None = None) -> list[ImageSpec]:
        """The images this message asks for (none with ``image: false``); ``count`` overrides
        the page's setting (``[sandbox:images=n]``)."""
        if not self.image:
            return []
        width, height = (int(n) for n in (self.size or f"{IMAGE_SIZE}x{IMAGE_SIZE}").split("x"))
        return [
            ImageSpec(self.prompt, width, height, n, self.style or None, self.model or None)
            for n in range(count or self.count)
        ]


def latency_from_env() -> int:
    """Read the reply latency (ms) from ``SEMANTEST_SANDBOX_LATENCY_MS``; 0 when unset."""
    raw = os.environ.get(LATENCY_ENV, "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{LATENCY_ENV} must be an integer number of ms, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{LATENCY_ENV} must be >= 0, got {value}")
    return value


def reply_chunks(prompt: str, count: int = _DELTA_COUNT) -> list[str]:
    """Split the reply to a one-off image prompt into ``count`` deltas (see `chunked`)."""
    return chunked(image_reply(prompt), count)


def chunked(reply: str, count: int = _DELTA_COUNT) -> list[str]:
    """Split a reply into at most ``count`` non-empty-when-possible deltas."""
    step = -(-len(reply) // count)  # ceiling division keeps the chunk count at most `count`
    return [reply[i : i + step] for i in range(0, len(reply), step)]


def _ndjson(obj: dict[str, object]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


def _fault_line(kind: str) -> dict[str, object]:
    """The error line of an injected fault (`hang` has none: the reply never finishes)."""
    if kind == "hang":
        return {"kind": "hang"}
    return {"kind": FAULT_KINDS[kind], "message": FAULT_MESSAGES[kind]}


def _token_line(asked: Behaviour, prompt: str, first_times: FirstTimes) -> dict[str, object] | None:
    """The error line the prompt's tokens ask for, if any.

    A rate-limit notice and a logout are shown the first time a prompt asks for them only, so
    the job's retry (of the same prompt) passes, as it would once the real notice has passed.
    """
    if asked.refuse:
        return {"kind": "refused", "message": REFUSAL}
    if asked.ratelimit_s is not None and first_times.first("ratelimit", prompt):
        wait = asked.ratelimit_s
        return {"kind": "rate-limited", "message": ratelimit_notice(wait), "retryAfterS": wait}
    if asked.logout and first_times.first("logout", prompt):
        return {"kind": "logged-out", "message": LOGGED_OUT}
    return None


def _no_session() -> JSONResponse:
    return JSONResponse({"error": "no session"}, status_code=403)


def _csp(nonce: str) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'nonce-{nonce}'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


def create_app(latency_ms: int | None = None) -> FastAPI:
    """Build a sandbox provider app.

    ``latency_ms`` is the time from a conversation request to its image line; when None it
    comes from ``SEMANTEST_SANDBOX_LATENCY_MS`` (default 0, invalid values raise ValueError).
    """
    latency = latency_from_env() if latency_ms is None else latency_ms
    if latency < 0:
        raise ValueError(f"latency_ms must be >= 0, got {latency}")
    store = ImageStore()
    conversations = Conversations()
    first_times = FirstTimes()
    faults: list[str] = []  # kinds of the next failing replies, oldest first
    app = FastAPI(title="Semantest sandbox provider", docs_url=None, redoc_url=None)

    @app.get("/")
    def root() -> RedirectResponse:
        """Send visitors to the chat page."""
        return RedirectResponse("/chat")

    run_id = os.environ.get(RUN_ID_ENV) or None

    @app.get("/health")
    def health() -> dict[str, object]:
        """Liveness, the configured latency and the stack run's id (when started by one)."""
        answer: dict[str, object] = {"ok": True, "latencyMs": latency}
        if run_id is not None:
            answer["runId"] = run_id
        return answer

    @app.post("/_sandbox/faults")
    def add_faults(body: FaultsIn) -> dict[str, object]:
        """Test control: make the next ``count`` replies fail the way a provider's do."""
        faults.extend([body.kind] * body.count)
        return {"pending": list(faults)}

    @app.delete("/_sandbox/faults")
    def clear_faults() -> dict[str, object]:
        """Test control: forget every fault not yet served (tests reset between each other)."""
        faults.clear()
        return {"pending": []}

    @app.get("/_sandbox/faults")
    def pending_faults() -> dict[str, object]:
        """Faults not yet served."""
        return {"pending": list(faults)}

    @app.get("/chat")
    def chat(request: Request) -> Response:
        """Serve the chat page with a fresh script nonce; start a session if there is none."""
        nonce = secrets.token_urlsafe(18)
        response = Response(chat_page_html(nonce), media_type="text/html; charset=utf-8")
        response.headers["Content-Security-Policy"] = _csp(nonce)
        # A cached page would carry a stale nonce.
        response.headers["Cache-Control"] = "no-store"
        if not request.cookies.get(SESSION_COOKIE):
            response.set_cookie(
                SESSION_COOKIE, secrets.token_urlsafe(24), path="/", httponly=True, samesite="lax"
            )
        return response

    @app.post("/api/conversation", response_model=None)
    async def conversation(request: Request, body: ConversationIn) -> Response:
        """Stream the reply as NDJSON: deltas, then the image line (when asked), then done."""
        session = request.cookies.get(SESSION_COOKIE)
        if not session:
            return _no_session()
        loop = asyncio.get_running_loop()
        started = loop.time()
        asked = behaviour(body.prompt)
        images = [(store.remember(spec), spec) for spec in body.images(asked.images)]
        if body.conversation_id is None:
            chunks = reply_chunks(body.prompt)
        else:
            turn = conversations.add(session, body.conversation_id, body.prompt)
            chunks = chunked(chat_reply(turn, body.image))
        error = _fault_line(faults.pop(0)) if faults else None
        hang = error is not None and error["kind"] == "hang"
        if error is None:
            error, hang = _token_line(asked, body.prompt, first_times), asked.hang
        took = latency if asked.slow_ms is None else asked.slow_ms
        suffix = "?broken=1" if asked.broken else ""

        async def lines() -> AsyncIterator[bytes]:
            for n, chunk in enumerate(chunks, start=1):
                if hang and n == 2:
                    await asyncio.Event().wait()  # until the client goes away
                if error is not None and n == 2:
                    yield _ndjson({"type": "error", **error})
                    return
                if took:
                    # Sleep to a deadline rather than a fixed step so the total stays ≈ latency
                    # however long serialisation and sending take.
                    deadline = started + took / 1000 * n / len(chunks)
                    await asyncio.sleep(max(0.0, deadline - loop.time()))
                yield _ndjson({"type": "delta", "text": chunk})
            for key, spec in images:
                yield _ndjson(
                    {
                        "type": "image",
                        "url": f"/img/{key}.png{suffix}",
                        "width": spec.width,
                        "height": spec.height,
                    }
                )
            yield _ndjson({"type": "done"})

        return StreamingResponse(
            lines(),
            media_type="application/x-ndjson",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/img/{image_id}.png", response_model=None)
    def image(request: Request, image_id: str, broken: bool = False) -> Response:
        """Serve a generated image to a session; 404 for ids this app never produced.

        ``broken=1`` (``[sandbox:broken]``) serves the PNG's signature and zeros: a real 200
        with an image type whose bytes do not decode, as a provider's broken image does.
        """
        if not request.cookies.get(SESSION_COOKIE):
            return _no_session()
        data = store.png(image_id)
        if data is None:
            return JSONResponse({"error": "unknown image"}, status_code=404)
        if broken:
            data = data[:8] + bytes(256)
        return Response(
            data,
            media_type="image/png",
            headers={"Cache-Control": "private, max-age=86400, immutable"},
        )

    return app
