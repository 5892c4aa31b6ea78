"""Turn what an addon saw into stored images: fetch, check, store the exact bytes.

URLs are fetched with the browser context's own request client, so the provider's cookies
(HttpOnly session included) go with them; `data:` URLs (how addons hand over `blob:` images)
are decoded. Every image is checked for content type, size and that it decodes, then stored
content-addressed with its sha256.
"""

from __future__ import annotations

import base64
import io
from urllib.parse import unquote_to_bytes

from PIL import Image
from playwright.async_api import APIRequestContext

from extension_bridge.protocol import CapturedImage
from semantest.errors import GenerationFailed, RetryableFailure
from semantest.models import ImageRecord
from semantest.storage import EXTENSIONS, Storage


async def fetch_bytes(
    request: APIRequestContext, image: CapturedImage, max_bytes: int
) -> tuple[bytes, str]:
    """The image's bytes and content type."""
    if image.data_url or image.url.startswith("data:"):
        url = image.data_url or image.url
        # base64 holds 3 bytes per 4 characters: refuse before decoding what cannot fit.
        if len(url) // 4 * 3 > max_bytes + 3 * 1024:
            raise GenerationFailed(f"data: URL image is over the {max_bytes} byte limit")
        data, content_type = decode_data_url(url)
        if len(data) > max_bytes:
            raise GenerationFailed(f"image is {len(data)} bytes, over the {max_bytes} limit")
        return data, content_type
    try:
        response = await request.get(image.url, timeout=30_000, max_redirects=3)
    except Exception as exc:  # network errors surface as playwright.Error
        raise RetryableFailure(f"image download failed: {exc}", "CAPTURE_FAILED") from exc
    if not response.ok:
        raise RetryableFailure(
            f"image download got HTTP {response.status} from {image.url}", "CAPTURE_FAILED"
        )
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await response.body()
    if len(body) > max_bytes:
        raise GenerationFailed(f"image is {len(body)} bytes, over the {max_bytes} limit")
    return body, content_type


def decode_data_url(url: str) -> tuple[bytes, str]:
    """Decode `data:<type>[;base64],<payload>`."""
    header, sep, payload = url.partition(",")
    if not header.startswith("data:") or not sep:
        raise GenerationFailed("malformed data: URL from the addon")
    meta = header[5:].split(";")
    content_type = meta[0].lower() or "text/plain"
    data = base64.b64decode(payload) if "base64" in meta[1:] else unquote_to_bytes(payload)
    return data, content_type


async def store_image(
    storage: Storage,
    tenant: str,
    data: bytes,
    content_type: str,
    *,
    source_url: str | None,
) -> ImageRecord:
    """Check the bytes are the image they claim to be, store them, describe the result.

    The record keeps the key, not a URL: the controller builds URLs when it serves a record.
    """
    if content_type not in EXTENSIONS:
        raise GenerationFailed(
            f"provider returned {content_type or 'no content type'}, not an image"
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            img.verify()
    except Exception as exc:
        raise GenerationFailed(f"image does not decode: {exc}") from exc
    stored = await storage.put(tenant, data, content_type)
    return ImageRecord(
        key=stored.key,
        sha256=stored.sha256,
        width=width,
        height=height,
        content_type=content_type,
        bytes=stored.size,
        source_url=None if source_url and source_url.startswith("data:") else source_url,
    )
