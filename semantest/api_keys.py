"""API keys: made once, stored only as their sha256, found by hash, listed and revoked by prefix.

A key is `sk_` and 40 random URL-safe characters (240 bits); its first 11 characters (`sk_` and
8 more) are its visible prefix, unique, which the admin API and the audit log name it by. The
key itself is shown once, when it is made, and never stored: its record lives at
`keys.api_key(sha256(key))`, a Redis hash of prefix, tenant, scopes, creation time and the
revoked flag; `keys.api_key_prefix(prefix)` points back to the hash, and `keys.API_KEYS` lists
every prefix by creation time. A revoked key keeps its record (so the list still shows it),
flagged; the controller refuses it from then on.

A key's plan is its tenant's (`semantest.tenants`), not the key's own: one authority.

Imports only the kernel.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Literal, get_args

from pydantic import Field
from redis.asyncio import Redis

from semantest import keys
from semantest.errors import NotFound
from semantest.models import CamelModel
from semantest.tenants import TenantName

Scope = Literal["jobs:write", "jobs:read", "addons:read", "addons:publish", "admin"]
#: Every scope a key or token can carry.
SCOPES: frozenset[str] = frozenset(get_args(Scope))
#: What a key gets when its creator names no scopes: a tenant's everyday work, no admin.
DEFAULT_SCOPES: tuple[Scope, ...] = ("jobs:write", "jobs:read", "addons:read")
#: A key's visible part: `sk_` and the key's next 8 characters.
PREFIX_LENGTH = 11
PREFIX_PATTERN = r"^sk_[A-Za-z0-9_-]{8}$"

#: Store a new key's record unless its prefix is taken. KEYS: record, prefix index, list.
#: ARGV: digest, prefix, tenant, scopes (space-separated), created at. Returns 1, or 0 (taken).
_CREATE_LUA = """
if not redis.call('SET', KEYS[2], ARGV[1], 'NX') then return 0 end
redis.call('HSET', KEYS[1], 'prefix', ARGV[2], 'tenant', ARGV[3], 'scopes', ARGV[4],
           'createdAt', ARGV[5], 'revoked', '0')
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
return 1
"""
#: Flag a key revoked (its first revocation time is kept). KEYS: record. ARGV: now.
#: Returns 0 when there is no such record.
_REVOKE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'revoked') ~= '1' then
  redis.call('HSET', KEYS[1], 'revoked', '1', 'revokedAt', ARGV[1])
end
return 1
"""


class ApiKeyRecord(CamelModel):
    """What is stored of a key (never the key or its hash in an answer)."""

    prefix: str = Field(pattern=PREFIX_PATTERN)
    tenant: TenantName
    scopes: list[Scope]
    created_at: float
    revoked: bool = False
    revoked_at: float | None = None

    @classmethod
    def from_hash(cls, fields: Mapping[bytes | str, bytes | str]) -> ApiKeyRecord:
        """The record from its Redis hash."""
        data = {_text(k): _text(v) for k, v in fields.items()}
        return cls(
            prefix=data["prefix"],
            tenant=data["tenant"],
            scopes=data["scopes"].split(),  # validated as Scope
            created_at=float(data["createdAt"]),
            revoked=data.get("revoked") == "1",
            revoked_at=float(data["revokedAt"]) if "revokedAt" in data else None,
        )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def key_digest(key: str) -> str:
    """How keys are stored and looked up: the hex sha256 of the key's text. A key carries 240
    random bits, so a plain hash is as good as a slow one here and costs nothing per request."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh API key."""
    return "sk_" + secrets.token_urlsafe(30)


def ordered_scopes(scopes: Iterable[str]) -> list[Scope]:
    """Scopes without repeats, in `Scope`'s order (how they are stored and shown)."""
    wanted = set(scopes)
    return [s for s in get_args(Scope) if s in wanted]


class KeyStore:
    """Typed access to API key records; one instance per Redis client."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(self, tenant: str, scopes: Iterable[str]) -> tuple[str, ApiKeyRecord]:
        """Make and store a key for `tenant`; the key (to show once) and its record."""
        chosen = ordered_scopes(scopes)
        while True:
            key = new_key()
            record = ApiKeyRecord(
                prefix=key[:PREFIX_LENGTH], tenant=tenant, scopes=chosen, created_at=time.time()
            )
            digest = key_digest(key)
            stored = await self.redis.eval(
                _CREATE_LUA,
                3,
                keys.api_key(digest),
                keys.api_key_prefix(record.prefix),
                keys.API_KEYS,
                digest,
                record.prefix,
                tenant,
                " ".join(chosen),
                repr(record.created_at),
            )
            if stored:
                return key, record
            # 48 random bits in a prefix: a repeat is rare, but a prefix names one key only

    async def lookup(self, key: str) -> ApiKeyRecord | None:
        """The record of the key presented (revoked or not), or None for an unknown key."""
        fields = await self.redis.hgetall(keys.api_key(key_digest(key)))
        return ApiKeyRecord.from_hash(fields) if fields else None

    async def by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        """The record of the key with this prefix, or None."""
        digest = await self.redis.get(keys.api_key_prefix(prefix))
        if digest is None:
            return None
        fields = await self.redis.hgetall(keys.api_key(_text(digest)))
        return ApiKeyRecord.from_hash(fields) if fields else None

    async def all(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        """Every key's record (of `tenant` only, when given), oldest first."""
        prefixes = [_text(p) for p in await self.redis.zrange(keys.API_KEYS, 0, -1)]
        if not prefixes:
            return []
        digests = await self.redis.mget([keys.api_key_prefix(p) for p in prefixes])
        async with self.redis.pipeline(transaction=False) as pipe:
            for digest in digests:
                if digest is not None:
                    pipe.hgetall(keys.api_key(_text(digest)))
            found = await pipe.execute()
        records = [ApiKeyRecord.from_hash(f) for f in found if f]
        return [r for r in records if tenant is None or r.tenant == tenant]

    async def revoke(self, prefix: str) -> ApiKeyRecord:
        """Flag the key with this prefix revoked (again: no change); its record after.
        `NotFound` when no key has this prefix."""
        digest = await self.redis.get(keys.api_key_prefix(prefix))
        if digest is None or not await self.redis.eval(
            _REVOKE_LUA, 1, keys.api_key(_text(digest)), repr(time.time())
        ):
            raise NotFound(f"no API key {prefix!r}", [{"field": "prefix", "reason": "unknown"}])
        found = await self.by_prefix(prefix)
        assert found is not None  # records are never deleted
        return found
