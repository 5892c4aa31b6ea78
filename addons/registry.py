"""The addon registry: every known version of every addon, its channels, and prebuilt bundles.

A `Registry` is an immutable snapshot. It is built from the built-in addons (the `addons/`
folder, loaded at start) and the published ones (`addons.store`), and each time something is
published, promoted or rolled back a new snapshot replaces it; every bundle, the index and
their hashes are computed while building it, never while answering a request.

Dependencies (`requires: {"lib": "^1.2.0"}`) are locked to the highest satisfying version
known when an addon is loaded or published, and kept with it, so a version's bundle never
changes afterwards (a pinned URL can be cached forever). Missing, unsatisfiable and circular
dependencies are `DependencyError`s naming the chain (`a@1.0.0 → b ^2.0.0`).

Channels: `stable` and `beta`. A channel's history (published, promoted, rolled back) lives
in Redis and decides its version; without one, the built-in addon serves the channel its
manifest names. `beta` falls back to `stable` for addons without a beta.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import semantic_version

from addons.bundle import Bundle, PartSource, build_bundle
from addons.manifest import CHANNELS, AddonManifest, parse_range, validate_manifest
from addons.match import matches_any
from semantest.errors import AddonNotFound, ValidationError
from semantest.providers import ProviderInfo

log = logging.getLogger(__name__)
#: Bundles `resolve` keeps per snapshot (one per distinct set of matching addons).
RESOLVED_MAX = 1024


class DependencyError(ValidationError):
    """A dependency that cannot be resolved: missing, unsatisfiable or circular (422)."""


@dataclass(frozen=True)
class AddonVersion:
    """One version of one addon: its manifest, files and locked dependencies."""

    manifest: AddonManifest
    files: tuple[tuple[str, bytes], ...]
    modified: float
    published: bool = False
    #: (dependency id, version) as locked when loaded or published; None: not locked yet.
    resolved: tuple[tuple[str, str], ...] | None = None

    @property
    def id(self) -> str:
        """The addon id."""
        return self.manifest.id

    @property
    def version(self) -> str:
        """Its semver version."""
        return self.manifest.version

    @property
    def label(self) -> str:
        """`id@version`, as errors and chains name it."""
        return f"{self.id}@{self.version}"

    @property
    def digest(self) -> str:
        """sha256 of the manifest and files: equal for an identical re-publish."""
        h = hashlib.sha256(self.manifest.model_dump_json().encode())
        for name, data in self.files:
            h.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(data).digest())
        return h.hexdigest()

    def part(self) -> PartSource:
        """Its part of a bundle."""
        return PartSource(self.id, self.version, self.files, self.modified)


@dataclass(frozen=True)
class Served:
    """An addon version with its bundle (its dependencies and itself): what a GET answers."""

    addon: AddonVersion
    bundle: Bundle

    @property
    def manifest(self) -> AddonManifest:
        """The addon's manifest."""
        return self.addon.manifest

    @property
    def source(self) -> bytes:
        """The bundle's bytes."""
        return self.bundle.body

    @property
    def etag(self) -> str:
        """The bundle's strong ETag."""
        return self.bundle.etag

    @property
    def integrity(self) -> str:
        """The bundle's SRI sha384."""
        return self.bundle.integrity

    @property
    def last_modified(self) -> str:
        """The bundle's HTTP date."""
        return self.bundle.last_modified


def load_addon(folder: Path) -> AddonVersion:
    """Load and validate one addon folder; errors name the file and field."""
    manifest_path = folder / "addon.json"
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise ValidationError(f"{manifest_path}: missing") from None
    manifest = validate_manifest(raw, str(manifest_path))
    if manifest.id != folder.name:
        raise ValidationError(
            f"{manifest_path}: id {manifest.id!r} differs from its folder {folder.name!r}",
            [{"field": "id", "reason": "must equal the folder name"}],
        )
    files: list[tuple[str, bytes]] = []
    mtime = manifest_path.stat().st_mtime
    for name in manifest.js:
        path = folder / name
        if not path.is_file():
            raise ValidationError(
                f"{manifest_path}: js file {name!r} not found", [{"field": "js", "reason": name}]
            )
        files.append((name, path.read_bytes()))
        mtime = max(mtime, path.stat().st_mtime)
    return AddonVersion(manifest=manifest, files=tuple(files), modified=mtime)


def lock(addon: AddonVersion, known: Mapping[str, Mapping[str, AddonVersion]]) -> AddonVersion:
    """`addon` with each `requires` range locked to the highest satisfying known version."""
    resolved: list[tuple[str, str]] = []
    for dep_id, spec in sorted(addon.manifest.requires.items()):
        where = f"{addon.label} → {dep_id} {spec}"
        if dep_id == addon.id:
            raise DependencyError(f"circular dependency: {where}", _field(dep_id))
        versions = known.get(dep_id)
        if not versions:
            raise DependencyError(
                f"missing dependency: {where}: no addon {dep_id!r}", _field(dep_id)
            )
        best = parse_range(spec).select(semantic_version.Version(v) for v in versions)
        if best is None:
            have = ", ".join(sorted(versions, key=semantic_version.Version))
            raise DependencyError(
                f"unsatisfiable dependency: {where}: no version satisfies it (known: {have})",
                _field(dep_id),
            )
        resolved.append((dep_id, str(best)))
    return replace(addon, resolved=tuple(resolved))


def _field(dep_id: str) -> list[dict[str, str]]:
    return [{"field": f"manifest.requires.{dep_id}", "reason": "cannot be resolved"}]


def closure(
    addon: AddonVersion, known: Mapping[str, Mapping[str, AddonVersion]]
) -> list[AddonVersion]:
    """`addon` and everything it needs, dependencies first (each version once)."""
    order: list[AddonVersion] = []
    done: set[str] = set()

    def visit(node: AddonVersion, chain: tuple[str, ...]) -> None:
        if node.label in chain:
            path = " → ".join((*chain[chain.index(node.label) :], node.label))
            raise DependencyError(f"circular dependency: {path}", _field(node.id))
        if node.label in done:
            return
        for dep_id, version in node.resolved or ():
            dep = known.get(dep_id, {}).get(version)
            if dep is None:
                path = " → ".join((*chain, node.label, f"{dep_id}@{version}"))
                raise DependencyError(f"missing dependency: {path}", _field(dep_id))
            visit(dep, (*chain, node.label))
        done.add(node.label)
        order.append(node)

    visit(addon, ())
    return order


class Registry:
    """One snapshot: versions, channels, bundles and the index, all prebuilt."""

    def __init__(
        self,
        versions: Iterable[AddonVersion],
        histories: Mapping[str, Mapping[str, list[str]]] | None = None,
        generation: int = 0,
    ) -> None:
        self.generation = generation
        self._known: dict[str, dict[str, AddonVersion]] = {}
        builtins: list[AddonVersion] = []
        for v in versions:
            self._known.setdefault(v.id, {})[v.version] = v
            if not v.published:
                builtins.append(v)
        for v in builtins:  # folder addons lock against everything known now
            self._known[v.id][v.version] = lock(v, self._known)
        self._served: dict[tuple[str, str], Served] = {}
        for addon_id, by_version in self._known.items():
            for version, v in by_version.items():
                try:
                    bundle = build_bundle([p.part() for p in closure(v, self._known)])
                except DependencyError:
                    if not v.published:
                        raise
                    log.exception("published addon %s cannot be bundled; not served", v.label)
                    continue
                self._served[(addon_id, version)] = Served(v, bundle)
        self._by_hash = {s.bundle.sha256: s.bundle for s in self._served.values()}
        self.histories = {k: dict(v) for k, v in (histories or {}).items()}
        self._current: dict[str, dict[str, Served]] = {
            ch: self._channel(ch, builtins) for ch in CHANNELS
        }
        self._resolved: dict[tuple[tuple[str, str], ...], Bundle] = {}
        self.indexes: dict[str, tuple[bytes, str]] = {ch: self._index(ch) for ch in CHANNELS}

    @classmethod
    def load(cls, root: Path) -> Registry:
        """The built-in addons of a folder (every `<root>/<id>/addon.json`)."""
        return cls(load_folder(root))

    def _channel(self, channel: str, builtins: list[AddonVersion]) -> dict[str, Served]:
        current: dict[str, Served] = {}
        for v in builtins:
            if v.manifest.channel == channel and (v.id, v.version) in self._served:
                current[v.id] = self._served[(v.id, v.version)]
        for addon_id, by_channel in self.histories.items():
            history = by_channel.get(channel) or []
            if history and (addon_id, history[-1]) in self._served:
                current[addon_id] = self._served[(addon_id, history[-1])]
        return current

    def _index(self, channel: str) -> tuple[bytes, str]:
        entries = [describe(s, channel) for s in self.current(channel)]
        body = json.dumps({"addons": entries}, separators=(",", ":")).encode()
        return body, f'"{hashlib.sha256(body).hexdigest()}"'

    def current(self, channel: str = "stable") -> list[Served]:
        """Every addon's version on `channel` (beta falls back to stable), ordered by id."""
        merged = dict(self._current["stable"])
        if channel != "stable":
            merged.update(self._current.get(channel, {}))
        return [merged[k] for k in sorted(merged)]

    def get(self, addon_id: str, version: str | None = None, channel: str = "stable") -> Served:
        """One addon: a pinned version, or its version on `channel`."""
        if version is not None:
            found = self._served.get((addon_id, version))
            if found is None:
                raise AddonNotFound(f"no version {version!r} of addon {addon_id!r}")
            return found
        for served in self.current(channel):
            if served.addon.id == addon_id:
                return served
        if addon_id in self._known:
            raise AddonNotFound(f"addon {addon_id!r} has no version on channel {channel!r}")
        raise AddonNotFound(f"no addon {addon_id!r}")

    def all(self) -> list[Served]:
        """Every addon on the stable channel, ordered by id."""
        return self.current("stable")

    def versions(self, addon_id: str) -> dict[str, AddonVersion]:
        """Every known version of an addon (empty when unknown)."""
        return dict(self._known.get(addon_id, {}))

    def known(self) -> dict[str, dict[str, AddonVersion]]:
        """Every known version of every addon."""
        return {k: dict(v) for k, v in self._known.items()}

    def providers(self) -> list[ProviderInfo]:
        """The providers the stable channel's addons drive (their manifests name them)."""
        return [
            ProviderInfo(m.provider, start_url=m.start_url, addon=m.id)
            for m in (s.manifest for s in self.current("stable"))
            if m.provider is not None
        ]

    def bundle(self, sha256: str) -> Bundle | None:
        """A bundle by its content hash."""
        return self._by_hash.get(sha256)

    def resolve(self, url: str, channel: str = "stable") -> tuple[list[Served], Bundle]:
        """The addons whose patterns match `url` as Chrome would, and their one bundle."""
        matched = [
            s
            for s in self.current(channel)
            if matches_any(url, s.manifest.matches, s.manifest.exclude_matches)
        ]
        key = tuple((s.addon.id, s.addon.version) for s in matched)
        bundle = self._resolved.get(key)
        if bundle is None:  # at most one build per set of addons per snapshot
            parts: dict[str, PartSource] = {}
            for s in matched:
                for v in closure(s.addon, self._known):
                    parts.setdefault(v.label, v.part())
            bundle = build_bundle(list(parts.values()))
            if len(self._resolved) >= RESOLVED_MAX:  # bounded: a cache, not a record
                self._resolved.clear()
            self._resolved[key] = bundle
            self._by_hash.setdefault(bundle.sha256, bundle)
        return matched, bundle


def load_folder(root: Path) -> list[AddonVersion]:
    """Every addon folder under `root`."""
    return [load_addon(p.parent) for p in sorted(root.glob("*/addon.json"))]


def folder_providers(root: Path) -> list[ProviderInfo]:
    """The providers the addon folders under `root` drive (what an agent knows at start)."""
    return [
        ProviderInfo(v.manifest.provider, start_url=v.manifest.start_url, addon=v.id)
        for v in load_folder(root)
        if v.manifest.provider is not None
    ]


def describe(served: Served, channel: str = "stable") -> dict[str, Any]:
    """An addon's index entry (what the extension registers)."""
    m, b = served.manifest, served.bundle
    return {
        "id": m.id,
        "name": m.name,
        "version": m.version,
        "channel": channel,
        "matches": m.matches,
        "excludeMatches": m.exclude_matches,
        "world": m.world,
        "runAt": m.run_at,
        "requires": m.requires,
        "parts": [{"id": i, "version": v} for i, v in b.parts],
        "etag": b.etag,
        "hash": b.sha256,
        "integrity": b.integrity,
        "url": f"/api/v1/addons/{m.id}",
        "bundleUrl": b.url,
    }
