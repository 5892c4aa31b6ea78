"""Image APIs as providers: OpenAI's Images API and Stability's Stable Image generate.

Each turns a job record into one HTTP request and the answer into images (bytes and content
type), or into a `JobFailure` carrying the job error code the browser providers use:

- 401 / 403, the key is refused: `PROVIDER_LOGGED_OUT`, not retried (a key does not mend).
- 429: `PROVIDER_RATE_LIMITED`, retried, not before `Retry-After` (`ProviderRateLimited`).
- content policy (OpenAI's 400 `content_policy_violation` / `moderation_blocked`, Stability's
  403 `content_moderation` or `finish-reason: CONTENT_FILTERED`): `CONTENT_REFUSED`, not retried.
- another 400 / 422 (a bad option): `GENERATION_FAILED`, not retried.
- 5xx, a network error: `PROVIDER_ERROR`, retried.

Only this module knows the two wire formats; `agents/api_worker.py` runs jobs with them.
Imports nothing of the browser side (Playwright, the bridge).
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from semantest.config import Settings
from semantest.errors import GenerationFailed, JobFailure, RetryableFailure
from semantest.models import JobRecord

#: The image APIs an API worker can serve (a job's `provider`).
API_PROVIDERS = ("openai", "stability")


@dataclass(frozen=True)
class GeneratedImage:
    """One image an API returned: its exact bytes, content type and where it came from."""

    data: bytes
    content_type: str
    source_url: str | None = None


class ProviderRateLimited(RetryableFailure):
    """429: retry, not before `retry_after_s` (the retry policy reads it)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, "PROVIDER_RATE_LIMITED", retry_after_s=retry_after_s)


class ApiProvider(Protocol):
    """What the API worker needs of an image API."""

    name: str

    async def generate(self, record: JobRecord, key: str) -> list[GeneratedImage]:
        """The images for `record`'s prompt and options, asked with API key `key`."""
        ...


def api_key(settings: Settings, provider: str, tenant: str) -> str:
    """The key a tenant's job uses: its own (`SEMANTEST_PROVIDER_KEYS`), else the fleet's."""
    own = settings.provider_keys.get(provider, {}).get(tenant)
    if own is not None:
        return own.get_secret_value()
    fleet = {"openai": settings.openai_api_key, "stability": settings.stability_api_key}
    key = fleet.get(provider)
    if key is None:
        raise JobFailure(
            f"no {provider} API key for tenant {tenant!r}: set SEMANTEST_PROVIDER_KEYS or "
            f"SEMANTEST_{provider.upper()}_API_KEY",
            "PROVIDER_LOGGED_OUT",
        )
    return key.get_secret_value()


def retry_after_s(response: httpx.Response, default: int = 1) -> int:
    """`Retry-After` in whole seconds (delta-seconds form; at least 1)."""
    try:
        return max(1, math.ceil(float(response.headers.get("retry-after", default))))
    except ValueError:
        return default


def _failure(provider: str, response: httpx.Response, message: str, refused: bool) -> JobFailure:
    status = response.status_code
    where = f"{provider} answered {status}: {message}"
    if status in (401, 403) and not refused:
        return JobFailure(where, "PROVIDER_LOGGED_OUT")
    if status == 429:
        return ProviderRateLimited(where, retry_after_s(response))
    if refused:
        return GenerationFailed(where, "CONTENT_REFUSED")
    if status >= 500:
        return RetryableFailure(where, "PROVIDER_ERROR")
    return GenerationFailed(where, "GENERATION_FAILED")


async def _send(provider: str, request: Any) -> httpx.Response:
    try:
        response: httpx.Response = await request
    except httpx.HTTPError as exc:
        raise RetryableFailure(
            f"{provider} could not be reached: {exc!r}", "PROVIDER_ERROR"
        ) from exc
    return response


class OpenAIImages:
    """`POST /v1/images/generations`; images come back as `b64_json` or as URLs to fetch."""

    name = "openai"

    def __init__(self, client: httpx.AsyncClient, base_url: str, model: str) -> None:
        self.client, self.base_url, self.model = client, base_url.rstrip("/"), model

    def body(self, record: JobRecord) -> dict[str, Any]:
        """The request body for a job (its options mapped to the API's fields)."""
        options = record.options
        model = options.model or self.model
        body: dict[str, Any] = {"model": model, "prompt": record.prompt, "n": options.count}
        if options.size:
            body["size"] = options.size
        if options.style:
            body["style"] = options.style
        if model.startswith("dall-e"):  # gpt-image-* always answer base64 and refuse the field
            body["response_format"] = "b64_json"
        body["user"] = record.tenant  # OpenAI's abuse monitoring asks for an end-user id
        return body

    async def generate(self, record: JobRecord, key: str) -> list[GeneratedImage]:
        """The job's images."""
        response = await _send(
            self.name,
            self.client.post(
                f"{self.base_url}/v1/images/generations",
                json=self.body(record),
                headers={"Authorization": f"Bearer {key}"},
            ),
        )
        if response.status_code != 200:
            error = _json(response).get("error") or {}
            code = str(error.get("code") or "")
            refused = code in ("content_policy_violation", "moderation_blocked")
            message = str(error.get("message") or response.text[:300])
            raise _failure(self.name, response, message, refused)
        items = _json(response).get("data")
        if not isinstance(items, list) or not items:
            raise GenerationFailed("openai answered without images", "GENERATION_FAILED")
        images = []
        for item in items:
            if item.get("b64_json"):
                images.append(GeneratedImage(_b64(item["b64_json"]), "image/png"))
            elif item.get("url"):
                images.append(await self._download(str(item["url"])))
            else:
                raise GenerationFailed("openai answered an image without data", "GENERATION_FAILED")
        return images

    async def _download(self, url: str) -> GeneratedImage:
        response = await _send(self.name, self.client.get(url, follow_redirects=True))
        if response.status_code != 200:  # URLs expire after an hour; ours are seconds old
            raise RetryableFailure(
                f"openai image URL answered {response.status_code}", "CAPTURE_FAILED"
            )
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        return GeneratedImage(response.content, content_type, source_url=url)


class StabilityImages:
    """`POST /v2beta/stable-image/generate/core` (multipart); the image comes back as bytes."""

    name = "stability"

    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        self.client, self.base_url = client, base_url.rstrip("/")

    def fields(self, record: JobRecord) -> dict[str, str]:
        """The form fields for a job (the API refuses `size` and `model` for this provider:
        the endpoint picks its own size and model)."""
        options = record.options
        fields = {"prompt": record.prompt, "output_format": "png"}
        if options.style:
            fields["style_preset"] = options.style
        return fields

    async def generate(self, record: JobRecord, key: str) -> list[GeneratedImage]:
        """The job's images: one request per image (`count`), as the endpoint makes one."""
        return [await self._one(record, key) for _ in range(record.options.count)]

    async def _one(self, record: JobRecord, key: str) -> GeneratedImage:
        fields = self.fields(record)
        response = await _send(
            self.name,
            self.client.post(
                f"{self.base_url}/v2beta/stable-image/generate/core",
                # multipart/form-data, as the endpoint requires (fields only, no file)
                files={name: (None, value) for name, value in fields.items()},
                headers={"Authorization": f"Bearer {key}", "Accept": "image/*"},
            ),
        )
        if response.status_code != 200:
            body = _json(response)
            errors = body.get("errors") or [response.text[:300]]
            refused = body.get("name") == "content_moderation"
            raise _failure(self.name, response, "; ".join(map(str, errors)), refused)
        if response.headers.get("finish-reason", "SUCCESS") == "CONTENT_FILTERED":
            raise GenerationFailed(
                "stability filtered the image (finish-reason CONTENT_FILTERED)", "CONTENT_REFUSED"
            )
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":  # the JSON form: {"image": base64, ...}
            return GeneratedImage(_b64(str(_json(response).get("image") or "")), "image/png")
        return GeneratedImage(response.content, content_type)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GenerationFailed(f"the API's base64 image does not decode: {exc}") from exc


def build(settings: Settings, provider: str, client: httpx.AsyncClient) -> ApiProvider:
    """The client of one API provider."""
    if provider == "openai":
        return OpenAIImages(client, settings.openai_base_url, settings.openai_model)
    if provider == "stability":
        return StabilityImages(client, settings.stability_base_url)
    raise ValueError(f"{provider!r} is not an API provider ({', '.join(API_PROVIDERS)})")
