"""The addon registry: manifests validated, sources bundled, hashes computed once at load.

An addon's served source is its JS files concatenated in manifest order. Its strong ETag is the
sha256 of those bytes, its `integrity` the SRI sha384, so an extension can cache by ETag and
check what it runs. Dependency bundling (`requires`) and published versions come later; a
manifest that declares `requires` is rejected until then rather than silently ignored.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic import ValidationError as PydanticValidationError

from semantest.errors import AddonNotFound, ValidationError

_SEMVER = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
#: Chrome match pattern: <all_urls> or scheme://host[:port]/path (host may start with *.).
_MATCH = re.compile(
    r"^(<all_urls>|(\*|https?|wss?|file|ftp)://(\*|\*\.[^/*:]+|[^/*:]+)?(:(\*|\d{1,5}))?/.*)$"
)


class AddonManifest(BaseModel):
    """`addons/<id>/addon.json`."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    version: Annotated[str, StringConstraints(pattern=_SEMVER)]
    matches: list[str] = Field(min_length=1)
    exclude_matches: list[str] = Field(default_factory=list)
    requires: dict[str, str] = Field(default_factory=dict)
    world: Literal["USER_SCRIPT", "MAIN"] = "USER_SCRIPT"
    run_at: Literal["document_start", "document_end", "document_idle"] = "document_idle"
    channel: Literal["stable", "beta"] = "stable"
    js: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_./-]+\.js$")]] = Field(
        min_length=1
    )

    @field_validator("matches", "exclude_matches")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not _MATCH.match(pattern):
                raise ValueError(f"{pattern!r} is not a Chrome match pattern")
        return patterns

    @field_validator("requires")
    @classmethod
    def _no_requires_yet(cls, requires: dict[str, str]) -> dict[str, str]:
        if requires:
            raise ValueError("dependencies are not supported by this registry version yet")
        return requires

    @field_validator("js")
    @classmethod
    def _relative(cls, files: list[str]) -> list[str]:
        if any(f.startswith("/") or ".." in f.split("/") for f in files):
            raise ValueError("js files must be relative paths inside the addon folder")
        return files


@dataclass(frozen=True)
class Addon:
    """A loaded addon: its manifest and the exact bytes served for it."""

    manifest: AddonManifest
    source: bytes
    etag: str
    integrity: str
    last_modified: str

    @property
    def id(self) -> str:
        """The addon id."""
        return self.manifest.id


def load_addon(folder: Path) -> Addon:
    """Load and validate one addon folder; errors name the file and field."""
    manifest_path = folder / "addon.json"
    try:
        manifest = AddonManifest.model_validate_json(manifest_path.read_bytes())
    except FileNotFoundError:
        raise ValidationError(f"{manifest_path}: missing") from None
    except PydanticValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()
        ]
        raise ValidationError(f"{manifest_path}: invalid addon manifest", details) from None
    if manifest.id != folder.name:
        raise ValidationError(
            f"{manifest_path}: id {manifest.id!r} differs from its folder {folder.name!r}",
            [{"field": "id", "reason": "must equal the folder name"}],
        )
    parts: list[bytes] = []
    mtime = manifest_path.stat().st_mtime
    for name in manifest.js:
        path = folder / name
        if not path.is_file():
            raise ValidationError(
                f"{manifest_path}: js file {name!r} not found", [{"field": "js", "reason": name}]
            )
        parts.append(f"// --- {manifest.id}@{manifest.version}/{name}\n".encode())
        parts.append(path.read_bytes())
        mtime = max(mtime, path.stat().st_mtime)
    source = b"\n".join(parts)
    return Addon(
        manifest=manifest,
        source=source,
        etag=f'"{hashlib.sha256(source).hexdigest()}"',
        integrity="sha384-" + base64.b64encode(hashlib.sha384(source).digest()).decode(),
        last_modified=formatdate(mtime, usegmt=True),
    )


class Registry:
    """All addons of a folder, loaded once."""

    def __init__(self, addons: list[Addon]) -> None:
        self._by_id = {a.id: a for a in addons}

    @classmethod
    def load(cls, root: Path) -> Registry:
        """Load every `<root>/<id>/addon.json`."""
        folders = sorted(p.parent for p in root.glob("*/addon.json"))
        return cls([load_addon(folder) for folder in folders])

    def get(self, addon_id: str) -> Addon:
        """One addon by id."""
        try:
            return self._by_id[addon_id]
        except KeyError:
            raise AddonNotFound(f"no addon {addon_id!r}") from None

    def all(self) -> list[Addon]:
        """Every addon, ordered by id."""
        return [self._by_id[k] for k in sorted(self._by_id)]
