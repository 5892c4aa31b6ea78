"""Image storage: content-addressed keys `<tenant>/<sha256>.<ext>`, local or S3 by settings.

`LocalStorage` writes with aiofiles to a temporary name and renames, so a reader never sees a
half-written file and a second write of the same bytes is a no-op. `S3Storage`
(`semantest/storage_s3.py`) is the same `Storage` protocol over boto3;
`storage_from_settings` picks one. Records keep only the key: where an image is downloaded
from is decided when a record is served (`public_url`, `signed_url`), so moving storage
never rewrites records. Imports nothing of ours beyond the kernel.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import aiofiles
import aiofiles.os

from semantest.errors import ImageNotFound, ValidationError

if TYPE_CHECKING:
    from semantest.config import Settings

#: Content types we store, and the extension each gets.
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_KEY = re.compile(r"^([a-z0-9][a-z0-9_-]{0,63})/([0-9a-f]{64})\.(png|jpg|webp|gif)$")


@dataclass(frozen=True)
class StoredObject:
    """What storing bytes produced."""

    key: str
    sha256: str
    size: int
    content_type: str


def object_key(tenant: str, data: bytes, content_type: str) -> tuple[str, str]:
    """The content-addressed key of `data` for `tenant`, and its sha256."""
    if not _TENANT.match(tenant):
        raise ValidationError("invalid tenant name", [{"field": "tenant", "reason": "pattern"}])
    ext = EXTENSIONS.get(content_type)
    if ext is None:
        raise ValidationError(
            f"unsupported content type {content_type!r}",
            [{"field": "contentType", "reason": f"one of {sorted(EXTENSIONS)}"}],
        )
    digest = hashlib.sha256(data).hexdigest()
    return f"{tenant}/{digest}.{ext}", digest


def parse_key(key: str) -> tuple[str, str, str]:
    """Split a key into (tenant, sha256, ext); anything else is not one of ours (404)."""
    match = _KEY.match(key)
    if match is None:
        raise ImageNotFound(f"no image {key!r}")
    tenant, digest, ext = match.groups()
    return tenant, digest, ext


def content_type_of(key: str) -> str:
    """The content type a stored key was written with."""
    ext = parse_key(key)[2]
    return next(ct for ct, e in EXTENSIONS.items() if e == ext)


class Storage(Protocol):
    """Where images go, and where a client downloads them from."""

    async def put(self, tenant: str, data: bytes, content_type: str) -> StoredObject:
        """Store bytes under their content address; storing the same bytes again is a no-op."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes of a stored key; `ImageNotFound` when there are none."""
        ...

    async def exists(self, key: str) -> bool:
        """True when the key is stored."""
        ...

    def public_url(self, key: str) -> str | None:
        """A URL anyone may download the image from (a CDN); None: the controller serves it."""
        ...

    async def signed_url(self, key: str) -> str | None:
        """A short-lived direct download URL the controller redirects to; None: it serves the
        bytes itself. `ImageNotFound` when the key is not stored."""
        ...

    async def check(self) -> str:
        """Readiness: `ok`, or `error: <why>` (never a secret)."""
        ...


#: Sub-folder of the local root where writes are staged before their atomic rename; a process
#: killed mid-write leaves its partial file there (never under a key), swept at agent start.
PARTIAL_DIR = ".partial"
#: Staged writes older than this are left-overs of a killed process.
PARTIAL_MAX_AGE_S = 600


class LocalStorage:
    """Images as files under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.partial = root / PARTIAL_DIR

    def path_for(self, key: str) -> Path:
        """The file of a key (validated, so no key escapes the root)."""
        parse_key(key)
        return self.root / key

    async def put(self, tenant: str, data: bytes, content_type: str) -> StoredObject:
        """Store bytes under their content address; identical bytes are written once."""
        key, digest = object_key(tenant, data, content_type)
        path = self.root / key
        if not path.exists():
            await aiofiles.os.makedirs(path.parent, exist_ok=True)
            await aiofiles.os.makedirs(self.partial, exist_ok=True)
            tmp = self.partial / f"{digest}.{uuid.uuid4().hex}.tmp"
            async with aiofiles.open(tmp, "wb") as f:
                await f.write(data)
            await aiofiles.os.replace(tmp, path)
        return StoredObject(key=key, sha256=digest, size=len(data), content_type=content_type)

    def sweep_partial(self, older_than_s: float = PARTIAL_MAX_AGE_S) -> int:
        """Delete staged writes a killed process left behind; how many were deleted."""
        swept = 0
        cutoff = time.time() - older_than_s
        for leftover in self.partial.glob("*.tmp") if self.partial.is_dir() else ():
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    swept += 1
        return swept

    async def get(self, key: str) -> bytes:
        """The bytes of a stored key."""
        path = self.path_for(key)
        try:
            async with aiofiles.open(path, "rb") as f:
                return await f.read()
        except FileNotFoundError:
            raise ImageNotFound(f"no image {key!r}") from None

    async def exists(self, key: str) -> bool:
        """True when the key is stored."""
        return await aiofiles.os.path.isfile(self.path_for(key))

    def public_url(self, key: str) -> str | None:
        """Local files have no URL of their own: the controller serves them."""
        return None

    async def signed_url(self, key: str) -> str | None:
        """Local files are served by the controller, never redirected."""
        return None

    async def check(self) -> str:
        """`ok` when the root (or, before the first image, its parent) is writable."""
        root = self.root if await aiofiles.os.path.exists(self.root) else self.root.parent
        return "ok" if await aiofiles.os.access(root, os.W_OK) else "error: not writable"


def storage_from_settings(settings: Settings) -> Storage:
    """The storage the settings choose (`SEMANTEST_STORAGE`)."""
    if settings.storage == "s3":
        # Imported here so a local deployment never loads boto3 (~130 ms of every start).
        from semantest.storage_s3 import S3Storage

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.images_dir)
