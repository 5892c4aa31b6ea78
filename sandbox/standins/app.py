"""One app serving both stand-ins: OpenAI's Images API and Stability's Stable Image generate.

- `POST /v1/images/generations` (JSON: `prompt`, `model`, `n`, `size`, `response_format`
  `b64_json` | `url`, `quality`, `style`, `user`) answers `{"created", "data": [{"b64_json"
  | "url", "revised_prompt"}]}`; a `url` is served by `GET /v1/files/{name}` for an hour.
  Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}`: 401
  `invalid_api_key`, 429 `rate_limit_exceeded` with `Retry-After`, 400
  `content_policy_violation`.
- `POST /v2beta/stable-image/generate/core` (multipart: `prompt`, `negative_prompt`,
  `aspect_ratio`, `seed`, `style_preset`, `output_format`) answers the image's bytes with
  `Accept: image/*` (headers `finish-reason`, `seed`) or `{"image": base64, "finish_reason",
  "seed"}` with `Accept: application/json`. Errors are Stability's `{"id", "name",
  "errors": [...]}`: 401 `unauthorized`, 429 `rate_limit_exceeded`, 403 `content_moderation`.

Both take `Authorization: Bearer <key>` and accept only the keys they were created with.
Faults for tests: `POST /_standin/faults {"kind": "ratelimit" | "refusal" | "server" | "slow",
"count", "retryAfter"}` makes the next `count` generations (of either API) fail that way (`slow`:
answer after `retryAfter` seconds);
a prompt containing `[standin:refuse]` is always refused. `GET /_standin/requests` lists what
was asked (provider, key, prompt, fields), so tests can see which key and options arrived.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections import deque
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from sandbox.render import ImageSpec, render

REFUSE_TOKEN = "[standin:refuse]"  # noqa: S105 (a prompt marker, not a password)
ASPECT_RATIOS = {
    "1:1": (512, 512),
    "16:9": (768, 432),
    "9:16": (432, 768),
    "3:2": (768, 512),
    "2:3": (512, 768),
    "4:5": (512, 640),
    "5:4": (640, 512),
    "21:9": (896, 384),
    "9:21": (384, 896),
}


class FaultIn(BaseModel):
    """Body of `POST /_standin/faults`."""

    kind: Literal["ratelimit", "refusal", "server", "slow"]
    count: Annotated[int, Field(ge=0, le=1000)] = 1
    retry_after: Annotated[int, Field(ge=0, le=3600, alias="retryAfter")] = 1


class ImagesIn(BaseModel):
    """OpenAI's `POST /v1/images/generations` body (the fields the stand-in reads)."""

    prompt: Annotated[str, Field(min_length=1, max_length=32_000)]
    model: str = "dall-e-2"
    n: Annotated[int, Field(ge=1, le=10)] = 1
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    quality: str | None = None
    style: str | None = None
    user: str | None = None


def _openai_error(status: int, message: str, kind: str, code: str, **headers: str) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _stability_error(status: int, name: str, message: str, **headers: str) -> Response:
    body = {"id": secrets.token_hex(16), "name": name, "errors": [message]}
    return JSONResponse(body, status_code=status, headers=headers)


def _size(text: str | None, default: tuple[int, int] = (512, 512)) -> tuple[int, int] | None:
    if not text or text == "auto":
        return default
    try:
        width, height = (int(v) for v in text.split("x"))
    except ValueError:
        return None
    return (width, height) if 64 <= width <= 2048 and 64 <= height <= 2048 else None


def create_app(keys: dict[str, set[str]]) -> FastAPI:
    """The stand-ins, accepting `keys["openai"]` and `keys["stability"]` as API keys."""
    app = FastAPI(title="Semantest image API stand-ins", docs_url=None, redoc_url=None)
    faults: deque[FaultIn] = deque()
    requests: list[dict[str, Any]] = []
    files: dict[str, tuple[bytes, float]] = {}

    def bearer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        return header[7:] if header.lower().startswith("bearer ") else ""

    def next_fault() -> FaultIn | None:
        while faults and faults[0].count <= 0:
            faults.popleft()
        if not faults:
            return None
        faults[0].count -= 1
        return faults[0]

    @app.post("/_standin/faults")
    async def add_fault(fault: FaultIn) -> dict[str, int]:
        faults.append(fault)
        return {"pending": sum(f.count for f in faults)}

    @app.delete("/_standin/faults")
    async def clear_faults() -> dict[str, int]:
        faults.clear()
        requests.clear()
        return {"pending": 0}

    @app.get("/_standin/requests")
    async def asked() -> list[dict[str, Any]]:
        return requests

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/images/generations")
    async def openai_generate(body: ImagesIn, request: Request) -> Response:
        key = bearer(request)
        requests.append({"provider": "openai", "key": key, **body.model_dump()})
        if key not in keys.get("openai", set()):
            shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
            return _openai_error(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        fault = next_fault()
        if fault and fault.kind == "slow":
            await asyncio.sleep(fault.retry_after)
        if fault and fault.kind == "ratelimit":
            return _openai_error(
                429,
                f"Rate limit reached for images per minute. Please try again in "
                f"{fault.retry_after}s.",
                "requests",
                "rate_limit_exceeded",
                **{"Retry-After": str(fault.retry_after)},
            )
        if fault and fault.kind == "server":
            return _openai_error(500, "The server had an error.", "server_error", "server_error")
        if (fault and fault.kind == "refusal") or REFUSE_TOKEN in body.prompt:
            return _openai_error(
                400,
                "Your request was rejected as a result of our safety system. Your prompt may "
                "contain text that is not allowed by our safety system.",
                "invalid_request_error",
                "content_policy_violation",
            )
        size = _size(body.size)
        if size is None:
            return _openai_error(
                400,
                f"'{body.size}' is not one of the supported sizes - 'size'",
                "invalid_request_error",
                "invalid_size",
            )
        data = []
        for variant in range(body.n):
            png = render(ImageSpec(body.prompt, *size, variant, body.style, body.model))
            item: dict[str, str] = {"revised_prompt": body.prompt}
            # gpt-image-* always answer base64; dall-e-* answer a URL unless asked otherwise.
            if body.response_format == "url" or (
                body.response_format is None and body.model.startswith("dall-e")
            ):
                name = f"img-{secrets.token_urlsafe(12)}.png"
                files[name] = (png, time.time() + 3600)
                item["url"] = f"{str(request.base_url).rstrip('/')}/v1/files/{name}"
            else:
                item["b64_json"] = base64.b64encode(png).decode()
            data.append(item)
        return JSONResponse({"created": int(time.time()), "data": data})

    @app.get("/v1/files/{name}")
    async def openai_file(name: str) -> Response:
        found = files.get(name)
        if found is None or found[1] < time.time():
            return Response("<Error><Code>AuthenticationFailed</Code></Error>", 403)
        return Response(found[0], media_type="image/png")

    @app.post("/v2beta/stable-image/generate/core")
    async def stability_generate(request: Request) -> Response:
        key = bearer(request)
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        requests.append({"provider": "stability", "key": key, **fields})
        if key not in keys.get("stability", set()):
            return _stability_error(401, "unauthorized", "authorization: invalid API key")
        prompt = fields.get("prompt", "")
        if not prompt:
            return _stability_error(400, "bad_request", "prompt: cannot be empty")
        fault = next_fault()
        if fault and fault.kind == "ratelimit":
            return _stability_error(
                429,
                "rate_limit_exceeded",
                "You have exceeded the rate limit of 150 requests within a 10 second period.",
                **{"Retry-After": str(fault.retry_after)},
            )
        if fault and fault.kind == "server":
            return _stability_error(500, "internal_error", "An unexpected server error occurred")
        if (fault and fault.kind == "refusal") or REFUSE_TOKEN in prompt:
            return _stability_error(
                403,
                "content_moderation",
                "Your request was flagged by our content moderation system, as a result your "
                "request was denied and you were not charged.",
            )
        ratio = fields.get("aspect_ratio", "1:1")
        if ratio not in ASPECT_RATIOS:
            return _stability_error(400, "bad_request", f"aspect_ratio: {ratio!r} is not valid")
        fmt = fields.get("output_format", "png")
        if fmt != "png":  # the stand-in renders PNG only; real ones also give jpeg and webp
            return _stability_error(400, "bad_request", f"output_format: {fmt!r} unsupported")
        seed = int(fields.get("seed") or 0)
        png = render(ImageSpec(prompt, *ASPECT_RATIOS[ratio], 0, fields.get("style_preset")))
        headers = {"finish-reason": "SUCCESS", "seed": str(seed)}
        if "application/json" in request.headers.get("accept", ""):
            body = {
                "image": base64.b64encode(png).decode(),
                "finish_reason": "SUCCESS",
                "seed": seed,
            }
            return JSONResponse(body, headers=headers)
        return Response(png, media_type="image/png", headers=headers)

    return app
