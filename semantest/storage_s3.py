"""Image storage in an S3 bucket (AWS or any S3-compatible endpoint), through boto3.

Same content-addressed keys as local storage, under an optional prefix: `<prefix><tenant>/
<sha256>.<ext>`. boto3 is synchronous, so every call runs in a worker thread
(`asyncio.to_thread`); a boto3 client is thread-safe, one is shared. Credentials come from
boto3's own chain (AWS_* variables, shared config, instance role) and are never logged or
held here. Imports nothing of ours beyond the kernel.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from semantest.errors import ImageNotFound
from semantest.storage import StoredObject, object_key, parse_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from semantest.config import Settings

#: Keys are content addresses: the bytes behind one never change.
IMMUTABLE = "public, max-age=31536000, immutable"
_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Storage:
    """Images as objects of one bucket, under one prefix."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        presign_expiry_s: int = 3600,
        cdn_base_url: str | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.presign_expiry_s = presign_expiry_s
        self.cdn_base_url = cdn_base_url

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        """The storage `SEMANTEST_S3_*` and `SEMANTEST_CDN_BASE_URL` describe."""
        assert settings.s3_bucket, "Settings validation requires a bucket with storage=s3"
        config = Config(
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": 3},
            # S3-compatible endpoints (MinIO, moto, an IP address) rarely resolve
            # `<bucket>.<host>`; AWS itself is reached virtual-hosted.
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=config,
        )
        return cls(
            client,
            settings.s3_bucket,
            settings.s3_prefix,
            presign_expiry_s=settings.s3_presign_expiry_s,
            cdn_base_url=settings.cdn_base_url,
        )

    def object_name(self, key: str) -> str:
        """The S3 object key of a storage key (validated, so no key escapes the prefix)."""
        parse_key(key)
        return f"{self.prefix}{key}"

    async def put(self, tenant: str, data: bytes, content_type: str) -> StoredObject:
        """Store bytes under their content address; a second put of the same bytes rewrites
        identical content, which S3 treats as a no-op for readers."""
        key, digest = object_key(tenant, data, content_type)
        await asyncio.to_thread(
            self.client.put_object,
            Bucket=self.bucket,
            Key=self.object_name(key),
            Body=data,
            ContentType=content_type,
            CacheControl=IMMUTABLE,
        )
        return StoredObject(key=key, sha256=digest, size=len(data), content_type=content_type)

    async def get(self, key: str) -> bytes:
        """The bytes of a stored key."""
        name = self.object_name(key)

        def read() -> bytes:
            return self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read()

        try:
            return await asyncio.to_thread(read)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise ImageNotFound(f"no image {key!r}") from None
            raise

    async def exists(self, key: str) -> bool:
        """True when the key is stored (one HEAD request)."""
        name = self.object_name(key)
        try:
            await asyncio.to_thread(self.client.head_object, Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        return True

    def public_url(self, key: str) -> str | None:
        """`<cdn>/<prefix><key>` when a CDN fronts the bucket; None: the controller serves it."""
        if self.cdn_base_url is None:
            return None
        return f"{self.cdn_base_url}/{self.object_name(key)}"

    async def signed_url(self, key: str) -> str | None:
        """A presigned GET of the object, valid `presign_expiry_s` seconds."""
        if not await self.exists(key):
            raise ImageNotFound(f"no image {key!r}")
        # Presigning is local computation, but resolving credentials may do I/O (instance role).
        return await asyncio.to_thread(
            self.client.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.object_name(key)},
            ExpiresIn=self.presign_expiry_s,
        )

    async def check(self) -> str:
        """`ok` when the bucket answers a HEAD; otherwise the error code, never a credential."""
        try:
            await asyncio.to_thread(self.client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            return f"error: {_code(exc) or 'ClientError'}"
        except BotoCoreError as exc:
            return f"error: {type(exc).__name__}"
        return "ok"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
