"""Which providers this deployment can drive: data from the addon registry, not code.

A browser provider exists because an addon's manifest names it (`"provider": "chatgpt"`,
`"startUrl": "https://chatgpt.com/"`); an API provider (an image API run without a browser)
is listed in `API_PROVIDERS`. Whoever loads the addon registry (the controller at start and
after every publish, an agent at start) hands its providers to `install()`; the API's models
validate `provider` against `names()` and `/openapi.json` shows that list as an enum.

A start URL may begin with `{sandbox_url}` (this deployment's sandbox address), and
`SEMANTEST_PROVIDER_URLS` overrides any provider's (replicas and stand-ins in tests).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from semantest.config import Settings

#: The provider every build has: the embedded sandbox.
DEFAULT_PROVIDER = "sandbox"
#: Image APIs run by an API worker (no browser, no addon). Their names are providers too.
API_PROVIDERS: tuple[str, ...] = ("openai", "stability")
#: A job's `provider` may also be this, or a list: the controller picks (docs/architecture.md,
#: "Routing and failover").
AUTO = "auto"
#: The placeholder a manifest's `startUrl` may begin with.
SANDBOX_PLACEHOLDER = "{sandbox_url}"


@dataclass(frozen=True)
class ProviderInfo:
    """One provider: its name, how it is driven, and where a slot opens its page."""

    name: str
    kind: Literal["browser", "api"] = "browser"
    #: The page a browser slot opens (may begin with `{sandbox_url}`); None for API providers.
    start_url: str | None = None
    #: The addon that drives it (browser providers).
    addon: str | None = None


_lock = threading.Lock()
_known: dict[str, ProviderInfo] = {
    DEFAULT_PROVIDER: ProviderInfo(
        DEFAULT_PROVIDER, start_url=SANDBOX_PLACEHOLDER + "/chat", addon=DEFAULT_PROVIDER
    ),
    **{name: ProviderInfo(name, kind="api") for name in API_PROVIDERS},
}


def install(found: Iterable[ProviderInfo]) -> None:
    """Add (or update) the providers a registry snapshot names; the API providers stay."""
    with _lock:
        for info in found:
            _known[info.name] = info


def names() -> tuple[str, ...]:
    """Every known provider, sorted (the sandbox first)."""
    with _lock:
        rest = sorted(n for n in _known if n != DEFAULT_PROVIDER)
    return (DEFAULT_PROVIDER, *rest)


def get(name: str) -> ProviderInfo | None:
    """One provider, or None."""
    with _lock:
        return _known.get(name)


def check(name: str) -> str:
    """`name` when it is a known provider; ValueError naming the known ones otherwise."""
    if get(name) is None:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(names())}")
    return name


def start_url(name: str, settings: Settings) -> str:
    """Where a slot of `name` opens its page: the override from settings, else the manifest's."""
    override = settings.provider_urls.get(name)
    if override:
        return override
    info = get(name)
    if info is None or info.start_url is None:
        raise ValueError(f"provider {name!r} has no start URL (set SEMANTEST_PROVIDER_URLS)")
    return info.start_url.replace(SANDBOX_PLACEHOLDER, settings.sandbox_url)


class _ProviderEnumSchema:
    """Shows the known providers as the schema's enum, read when the schema is generated."""

    def __init__(self, choice: bool = False) -> None:
        self.choice = choice

    def __get_pydantic_json_schema__(
        self, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        known = list(names())
        one: JsonSchemaValue = {"type": "string", "enum": known}
        if not self.choice:
            return one
        return {
            "anyOf": [
                {"type": "string", "enum": [*known, AUTO]},
                {"type": "array", "items": one, "minItems": 1, "maxItems": 10},
            ],
            "description": "A provider, `auto` (any healthy one with capacity), or a list in "
            "order of preference (a retryable failure fails over to the next).",
        }


#: A known provider's name (422 naming the known ones otherwise).
ProviderName = Annotated[str, AfterValidator(check), _ProviderEnumSchema()]


def _choice(value: str | list[str]) -> str | list[str]:
    if isinstance(value, str):
        return value if value == AUTO else check(value)
    if not 1 <= len(value) <= 10:
        raise ValueError("a list of providers holds 1 to 10 names")
    for name in value:
        check(name)
    return value


#: What a job may ask for: one provider, `"auto"` (any healthy one with capacity), or a list
#: in order of preference (the first healthy one with capacity; a retryable failure fails
#: over to the next).
ProviderChoice = Annotated[
    str | list[str], AfterValidator(_choice), _ProviderEnumSchema(choice=True)
]
