"""Published addons in Redis, and the catalog each controller process serves from.

Keys (all under `semantest:addons:`):

- `ids`: a set of the ids with published versions;
- `versions:<id>`: a hash, version → JSON `{manifest, files, resolved, publishedAt, digest}`,
  written with HSETNX: a version is immutable once stored;
- `channel:<id>:<channel>`: a list, the channel's history (its last element is current);
- `generation`: a counter bumped by every publish, promote and rollback.

Every controller process holds a `Catalog`: the built-in addons plus everything in Redis, as
one `Registry` snapshot. A process that writes rebuilds at once; the others notice the
generation change within `REFRESH_S` and rebuild too. Requests only read the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from addons.manifest import AddonManifest
from addons.registry import AddonVersion, Registry, closure, lock
from semantest.errors import AddonNotFound, Conflict

log = logging.getLogger(__name__)

PREFIX = "semantest:addons:"
IDS = PREFIX + "ids"
GENERATION = PREFIX + "generation"
#: How often (seconds) a process looks for changes made through another process.
REFRESH_S = 0.25


def versions_key(addon_id: str) -> str:
    """The hash of an addon's published versions."""
    return f"{PREFIX}versions:{addon_id}"


def channel_key(addon_id: str, channel: str) -> str:
    """The list holding a channel's history."""
    return f"{PREFIX}channel:{addon_id}:{channel}"


#: KEYS: channel list, generation. ARGV: version to make current, the version serving the
#: channel before any history (seeded first, so a rollback can go back to it; "" if none).
PROMOTE_LUA = """
if redis.call('LLEN', KEYS[1]) == 0 and ARGV[2] ~= '' and ARGV[2] ~= ARGV[1] then
  redis.call('RPUSH', KEYS[1], ARGV[2])
end
if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then
  redis.call('RPUSH', KEYS[1], ARGV[1])
end
return redis.call('INCR', KEYS[2])
"""
#: KEYS: channel list, generation. Returns the version now current, or false when there is
#: no earlier one to go back to.
ROLLBACK_LUA = """
if redis.call('LLEN', KEYS[1]) < 2 then return false end
redis.call('RPOP', KEYS[1])
redis.call('INCR', KEYS[2])
return redis.call('LINDEX', KEYS[1], -1)
"""


@dataclass(frozen=True)
class Published:
    """What a publish did: the version stored (or found identical) and its bundle."""

    addon: AddonVersion
    created: bool


def encode(addon: AddonVersion, published_at: float) -> str:
    """A version's Redis record."""
    return json.dumps(
        {
            "manifest": addon.manifest.model_dump(mode="json"),
            "files": {name: data.decode() for name, data in addon.files},
            "resolved": dict(addon.resolved or ()),
            "publishedAt": published_at,
            "digest": addon.digest,
        }
    )


def decode(raw: str | bytes) -> AddonVersion:
    """A version from its Redis record."""
    record: dict[str, Any] = json.loads(raw)
    manifest = AddonManifest.model_validate(record["manifest"])
    files = tuple((name, record["files"][name].encode()) for name in manifest.js)
    return AddonVersion(
        manifest=manifest,
        files=files,
        modified=float(record["publishedAt"]),
        published=True,
        resolved=tuple(sorted(record["resolved"].items())),
    )


class Catalog:
    """The registry one process serves: built-ins plus Redis, refreshed on change."""

    def __init__(self, redis: Redis, builtins: list[AddonVersion]) -> None:
        self.redis = redis
        self.builtins = builtins
        self.registry = Registry(builtins)
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Any] = []

    def on_change(self, listener: Any) -> None:
        """Call `listener(registry)` after every rebuild (the fast path's header cache)."""
        self._listeners.append(listener)

    async def reload(self) -> Registry:
        """Read every published version and channel from Redis and rebuild the snapshot."""
        generation = int(await self.redis.get(GENERATION) or 0)
        ids = sorted(
            i.decode() if isinstance(i, bytes) else i for i in await self.redis.smembers(IDS)
        )
        published: list[AddonVersion] = []
        histories: dict[str, dict[str, list[str]]] = {}
        for addon_id in ids:
            records = await self.redis.hgetall(versions_key(addon_id))
            published += [decode(raw) for raw in records.values()]
            for channel in ("stable", "beta"):
                raw_history = await self.redis.lrange(channel_key(addon_id, channel), 0, -1)
                if raw_history:
                    histories.setdefault(addon_id, {})[channel] = [
                        h.decode() if isinstance(h, bytes) else h for h in raw_history
                    ]
        shadowed = {(v.id, v.version) for v in self.builtins}
        versions = [*self.builtins, *(v for v in published if (v.id, v.version) not in shadowed)]
        self.registry = Registry(versions, histories, generation)
        for listener in self._listeners:
            listener(self.registry)
        return self.registry

    async def start(self) -> None:
        """Load what Redis holds and follow other processes' changes."""
        try:
            await self.reload()
        except RedisError as exc:  # serve the built-ins; the loop retries
            log.warning("published addons not loaded (Redis: %r); serving built-ins", exc)
        self._task = asyncio.create_task(self._follow(), name="addon-catalog")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                generation = int(await self.redis.get(GENERATION) or 0)
                if generation != self.registry.generation:
                    await self.reload()
            except (RedisError, OSError) as exc:
                log.debug("addon catalog refresh skipped: %r", exc)
            except Exception:  # a bad record must not stop the loop
                log.exception("addon catalog refresh failed")

    async def publish(self, addon: AddonVersion) -> Published:
        """Store a new immutable version and make it current on its manifest's channel.

        The same bytes again: nothing changes (`created` False). Other bytes under a stored
        version: 409. Dependencies are locked against what is published now.
        """
        registry = await self.reload()
        known = registry.known()
        existing = known.get(addon.id, {}).get(addon.version)
        if existing is not None and existing.digest != addon.digest:
            raise Conflict(
                f"{addon.label} is already published with other content; versions are "
                "immutable: publish a new version"
            )
        locked = lock(addon, known)
        closure(locked, {**known, addon.id: {**known.get(addon.id, {}), addon.version: locked}})
        created = False
        if existing is None:
            created = bool(
                await self.redis.hsetnx(
                    versions_key(addon.id), addon.version, encode(locked, time.time())
                )
            )
            if not created:  # another process stored it meanwhile: same bytes or 409
                registry = await self.reload()
                return await self.publish(addon)
            await self.redis.sadd(IDS, addon.id)
            await self._promote(registry, addon.id, addon.version, addon.manifest.channel)
        stored = self.registry.versions(addon.id).get(addon.version, locked)
        return Published(replace(stored), created)

    async def promote(self, addon_id: str, version: str, channel: str) -> Registry:
        """Make `version` current on `channel`."""
        registry = await self.reload()
        if version not in registry.versions(addon_id):
            raise AddonNotFound(f"no version {version!r} of addon {addon_id!r}")
        return await self._promote(registry, addon_id, version, channel)

    async def _promote(
        self, registry: Registry, addon_id: str, version: str, channel: str
    ) -> Registry:
        seed = ""
        with contextlib.suppress(AddonNotFound):
            seed = registry.get(addon_id, channel=channel).addon.version
        if channel == "beta" and registry.histories.get(addon_id, {}).get("beta") is None:
            seed = ""  # beta's fallback is stable's version, not a beta of its own
        await self.redis.eval(
            PROMOTE_LUA, 2, channel_key(addon_id, channel), GENERATION, version, seed
        )
        return await self.reload()

    async def rollback(self, addon_id: str, channel: str) -> str:
        """Move `channel` back to its previous version; returns it. 409 when there is none."""
        registry = await self.reload()
        if not registry.versions(addon_id):
            raise AddonNotFound(f"no addon {addon_id!r}")
        current = await self.redis.eval(ROLLBACK_LUA, 2, channel_key(addon_id, channel), GENERATION)
        if current is None:
            raise Conflict(f"channel {channel!r} of addon {addon_id!r} has no earlier version")
        await self.reload()
        return current.decode() if isinstance(current, bytes) else str(current)
