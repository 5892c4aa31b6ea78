"""Semantest shared kernel: settings, the job contract, errors, Redis key names, storage, the
client SDK and the CLI.

Everything else builds on this package. It imports only the standard library and third-party
packages — never `controller`, `agents`, `extension_bridge`, `addons`, `browser_profiles` or
`sandbox` (an import-linter contract in pyproject.toml keeps it so).

`semantest.Client` and `semantest.AsyncClient` (the SDK, docs/quickstart.md) are imported on
first use, so `import semantest` stays cheap for agents and the controller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semantest.async_client import AsyncClient
    from semantest.client import Client

__version__ = "0.1.0"
__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from semantest.client import Client

        return Client
    if name == "AsyncClient":
        from semantest.async_client import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'semantest' has no attribute {name!r}")
