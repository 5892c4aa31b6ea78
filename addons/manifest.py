"""An addon's manifest (`addon.json`): the one model for the folder, publishing and Redis.

Versions are semver (`semantic_version`), `requires` maps addon ids to npm-style ranges
(`^1.2.0`, `~1.2`, `>=1 <2`, `1.x || 2.x`), parsed by the same library's `NpmSpec`, and match
patterns are checked by `addons.match`. Errors name the field. Imports only `addons` and
`semantest`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import semantic_version
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from addons.match import PatternError, check_pattern
from semantest.errors import ValidationError

ADDON_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_ADDON_ID = re.compile(ADDON_ID)
#: Path segments of `/api/v1/addons/...` that are routes, not addons.
RESERVED_IDS = frozenset({"resolve", "bundles", "allowlist", "versions"})
Channel = Literal["stable", "beta"]
CHANNELS: tuple[Channel, ...] = ("stable", "beta")


def parse_version(text: str) -> semantic_version.Version:
    """A semver version, or ValueError saying so."""
    try:
        return semantic_version.Version(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a semver version (MAJOR.MINOR.PATCH)") from None


def parse_range(text: str) -> semantic_version.NpmSpec:
    """An npm-style semver range, or ValueError saying so."""
    try:
        return semantic_version.NpmSpec(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an npm semver range") from None


class AddonManifest(BaseModel):
    """`addons/<id>/addon.json`, and the `manifest` of a publish request."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, StringConstraints(pattern=ADDON_ID)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    version: Annotated[str, StringConstraints(max_length=64)]
    matches: list[str] = Field(min_length=1, max_length=100)
    exclude_matches: list[str] = Field(default_factory=list, max_length=100)
    requires: dict[str, str] = Field(default_factory=dict, max_length=32)
    world: Literal["USER_SCRIPT", "MAIN"] = "USER_SCRIPT"
    run_at: Literal["document_start", "document_end", "document_idle"] = "document_idle"
    channel: Channel = "stable"
    js: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_./-]+\.js$")]] = Field(
        min_length=1, max_length=32
    )
    #: The provider this addon drives (a job's `provider`); none for a helper library.
    provider: Annotated[str, StringConstraints(pattern=ADDON_ID)] | None = None
    #: The page an agent's slot opens for that provider; may begin with `{sandbox_url}`.
    start_url: Annotated[
        str | None,
        Field(
            validation_alias=AliasChoices("startUrl", "start_url"),
            serialization_alias="startUrl",
            pattern=r"^(https?://|\{sandbox_url\})[^\s]{0,2000}$",
        ),
    ] = None

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, addon_id: str) -> str:
        if addon_id in RESERVED_IDS:
            raise ValueError(f"{addon_id!r} is reserved (a route under /api/v1/addons)")
        return addon_id

    @field_validator("version")
    @classmethod
    def _semver(cls, version: str) -> str:
        parse_version(version)
        return version

    @field_validator("matches", "exclude_matches")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                check_pattern(pattern)
            except PatternError as exc:
                raise ValueError(str(exc)) from None
        return patterns

    @field_validator("requires")
    @classmethod
    def _ranges(cls, requires: dict[str, str]) -> dict[str, str]:
        for addon_id, spec in requires.items():
            if not _ADDON_ID.match(addon_id):
                raise ValueError(f"{addon_id!r} is not an addon id")
            parse_range(spec)
        return requires

    @model_validator(mode="after")
    def _provider_has_a_page(self) -> AddonManifest:
        if (self.provider is None) != (self.start_url is None):
            raise ValueError("provider and startUrl go together: a provider needs its start page")
        return self

    @field_validator("js")
    @classmethod
    def _relative(cls, files: list[str]) -> list[str]:
        if any(f.startswith("/") or ".." in f.split("/") for f in files):
            raise ValueError("js files must be relative paths inside the addon folder")
        if len(set(files)) != len(files):
            raise ValueError("a js file is listed twice")
        return files


def validate_manifest(raw: Any, where: str, prefix: str = "") -> AddonManifest:
    """The manifest from JSON text or a dict; a 422 naming `where` and each bad field."""
    try:
        if isinstance(raw, (str, bytes)):
            return AddonManifest.model_validate_json(raw)
        return AddonManifest.model_validate(raw)
    except PydanticValidationError as exc:
        details = [
            {"field": prefix + ".".join(str(p) for p in e["loc"]), "reason": e["msg"]}
            for e in exc.errors()
        ]
        first = details[0] if details else {"field": prefix, "reason": "invalid"}
        raise ValidationError(
            f"{where}: invalid addon manifest ({first['field']}: {first['reason']})", details
        ) from None
