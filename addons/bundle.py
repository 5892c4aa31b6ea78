"""Bundles: the exact bytes an extension registers for an addon (its dependencies first).

A bundle is a sequence of parts, one per addon version, dependencies before dependents. Each
part is the addon's JS files in manifest order inside one function scope, so two addons never
see each other's top-level names (they share values through `SemantestAddon.provide/use`),
and ends with its own `//# sourceURL=` line, so devtools and stack traces name the addon and
version. The extension splits a verified bundle after each `//# sourceURL=` line and registers
every part as its own script. A bundle's strong ETag is the sha256 of its bytes, `integrity`
the SRI sha384; it is built once, when its addons are loaded or published, never per request.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate

#: The address a part names itself by (devtools, stack traces).
SOURCE_URL = "semantest-addon://{id}/{version}/bundle.js"


@dataclass(frozen=True)
class PartSource:
    """One addon version's files, as a bundle part is built from them."""

    addon_id: str
    version: str
    files: tuple[tuple[str, bytes], ...]
    #: When its files last changed or it was published (epoch seconds).
    modified: float


@dataclass(frozen=True)
class Bundle:
    """Prebuilt bytes with everything a response about them needs."""

    body: bytes
    sha256: str
    etag: str
    integrity: str
    last_modified: str
    #: (addon id, version) of each part, dependencies first.
    parts: tuple[tuple[str, str], ...]

    @property
    def url(self) -> str:
        """Its content-addressed URL: the bytes there never change."""
        return f"/api/v1/addons/bundles/{self.sha256}.js"


def render_part(part: PartSource) -> bytes:
    """One part: the files in one function scope, then its sourceURL line."""
    out = [f";(() => {{ // {part.addon_id}@{part.version}\n".encode()]
    for name, data in part.files:
        out.append(f"// --- {part.addon_id}@{part.version}/{name}\n".encode())
        out.append(data if data.endswith(b"\n") else data + b"\n")
    out.append(b"})();\n")
    out.append(
        f"//# sourceURL={SOURCE_URL.format(id=part.addon_id, version=part.version)}\n".encode()
    )
    return b"".join(out)


def build_bundle(parts: Sequence[PartSource]) -> Bundle:
    """The bundle of `parts`, in the order given (dependencies first)."""
    body = b"".join(render_part(p) for p in parts)
    digest = hashlib.sha256(body).hexdigest()
    modified = max((p.modified for p in parts), default=0.0)
    return Bundle(
        body=body,
        sha256=digest,
        etag=f'"{digest}"',
        integrity="sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode(),
        last_modified=formatdate(modified, usegmt=True),
        parts=tuple((p.addon_id, p.version) for p in parts),
    )
