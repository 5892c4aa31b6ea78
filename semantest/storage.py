"""Image storage: content-addressed keys `<tenant>/<sha256>.<ext>` in a local folder.

`LocalStorage` writes with aiofiles to a temporary name and renames, so a reader never sees a
half-written file and a second write of the same bytes is a no-op. S3 (boto3) comes later
behind the same `Storage` protocol.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiofiles
import aiofiles.os

from semantest.errors import ImageNotFound, ValidationError

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
    """Where images go."""

    async def put(self, tenant: str, data: bytes, content_type: str) -> StoredObject: ...

    async def get(self, key: str) -> bytes: ...


class LocalStorage:
    """Images as files under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

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
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            async with aiofiles.open(tmp, "wb") as f:
                await f.write(data)
            await aiofiles.os.replace(tmp, path)
        return StoredObject(key=key, sha256=digest, size=len(data), content_type=content_type)

    async def get(self, key: str) -> bytes:
        """The bytes of a stored key."""
        path = self.path_for(key)
        try:
            async with aiofiles.open(path, "rb") as f:
                return await f.read()
        except FileNotFoundError:
            raise ImageNotFound(f"no image {key!r}") from None

    def exists(self, key: str) -> bool:
        """True when the key is stored."""
        return os.path.isfile(self.path_for(key))
