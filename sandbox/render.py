"""Deterministic placeholder images for the sandbox provider.

Every prompt maps to exactly one PNG (same prompt, same bytes), so tests can compare what a
browser downloaded against what the provider would render, byte for byte. A request's options
change it the way they would at a real provider: `size` is the canvas (the same picture at
another resolution), `style` and `model` give another picture, and the images of one reply
(`count`) are variants 0, 1, … of the prompt, each different. The default request (512x512,
variant 0, no style or model) renders exactly `render_png(prompt)`.
"""

from __future__ import annotations

import hashlib
import io
import json
import textwrap
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

_MAX_TEXT_LINES = 8
_SHAPE_COUNT = 5
DEFAULT_SIZE = 512


@dataclass(frozen=True)
class ImageSpec:
    """What one generated image is: the prompt and the options that shape it."""

    prompt: str
    width: int = DEFAULT_SIZE
    height: int = DEFAULT_SIZE
    #: Which image of the reply (0 for the first).
    variant: int = 0
    style: str | None = None
    model: str | None = None

    @property
    def seed_text(self) -> str:
        """What the picture is drawn from: the prompt alone for the default request."""
        if not (self.variant or self.style or self.model):
            return self.prompt
        return json.dumps([self.prompt, self.variant, self.style, self.model])

    @property
    def key(self) -> str:
        """The image's id: `image_id(prompt)` for the default request."""
        if (self.width, self.height) == (DEFAULT_SIZE, DEFAULT_SIZE):
            return image_id(self.seed_text)
        return image_id(json.dumps([self.seed_text, self.width, self.height]))


def image_id(prompt: str) -> str:
    """Return the stable id of a prompt's image: the first 32 hex digits of its sha256."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:32]


def _colour(digest: bytes, offset: int) -> tuple[int, int, int]:
    """Take three digest bytes (wrapping around) as an RGB colour."""
    n = len(digest)
    return (digest[offset % n], digest[(offset + 1) % n], digest[(offset + 2) % n])


def _contrast(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on the given colour."""
    r, g, b = rgb
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _draw_shapes(draw: ImageDraw.ImageDraw, digest: bytes, width: int, height: int) -> None:
    """Draw a few ellipses/rectangles whose geometry and colour come from the digest."""
    size = min(width, height)
    for i in range(_SHAPE_COUNT):
        base = 3 + i * 5
        x0 = digest[base % 32] * width // 256
        y0 = digest[(base + 1) % 32] * height // 256
        extent = size // 8 + digest[(base + 2) % 32] * size // 512
        box = (x0 - extent // 2, y0 - extent // 2, x0 + extent // 2, y0 + extent // 2)
        fill = _colour(digest, base + 3)
        if digest[(base + 4) % 32] % 2:
            draw.ellipse(box, fill=fill, outline=_contrast(fill), width=max(1, size // 256))
        else:
            draw.rectangle(box, fill=fill, outline=_contrast(fill), width=max(1, size // 256))


def _text_lines(
    prompt: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int
) -> list[str]:
    """Wrap the prompt to the panel width, keeping at most a few lines."""
    text = " ".join(prompt.split())
    if not isinstance(font, ImageFont.FreeTypeFont):
        # The bitmap fallback font can only encode latin-1; degrade instead of raising.
        text = text.encode("latin-1", "replace").decode("latin-1")
    char_width = max(1.0, font.getlength("abcdefghijklmnopqrstuvwxyz") / 26)
    lines = textwrap.wrap(text, width=max(8, int(width / char_width)))
    if len(lines) > _MAX_TEXT_LINES:
        lines = lines[:_MAX_TEXT_LINES]
        lines[-1] = lines[-1][: max(0, len(lines[-1]) - 1)] + "…"
    return lines


def render_png(prompt: str, size: int = DEFAULT_SIZE) -> bytes:
    """Render a deterministic ``size``x``size`` PNG for ``prompt`` (the default request)."""
    return render(ImageSpec(prompt, size, size))


def render(spec: ImageSpec) -> bytes:
    """Render the deterministic PNG of one image.

    Background and shapes are derived from sha256 of `spec.seed_text`; the prompt (and the
    style and model, when given) is written on a panel at the bottom. No metadata chunks are
    written, so the bytes only depend on the spec and the installed Pillow.
    """
    width, height = spec.width, spec.height
    size = min(width, height)
    digest = hashlib.sha256(spec.seed_text.encode("utf-8")).digest()
    background = _colour(digest, 0)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    _draw_shapes(draw, digest, width, height)

    font = ImageFont.load_default(max(10, size // 28))
    margin = size // 24
    text = spec.prompt
    if spec.style or spec.model:
        text += " · " + " · ".join(p for p in (spec.style, spec.model) if p)
    lines = _text_lines(text, font, width - 4 * margin)
    line_height = max(10, size // 28) + size // 128
    panel_height = line_height * len(lines) + 2 * margin
    panel_top = max(margin, height - margin - panel_height)
    panel = _colour(digest, 29)
    draw.rectangle(
        (margin, panel_top, width - margin, height - margin), fill=panel, outline=_contrast(panel)
    )
    ink = _contrast(panel)
    for n, line in enumerate(lines):
        draw.text((2 * margin, panel_top + margin + n * line_height), line, fill=ink, font=font)

    out = io.BytesIO()
    # Fixed encoder settings and no pnginfo: nothing time- or host-dependent goes in.
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()
