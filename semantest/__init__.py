"""Semantest shared kernel: settings, the job contract, errors, Redis key names, storage, CLI.

Everything else builds on this package. It imports only the standard library and third-party
packages — never `controller`, `agents`, `extension_bridge`, `addons`, `browser_profiles` or
`sandbox` (an import-linter contract in pyproject.toml keeps it so).
"""

__version__ = "0.1.0"
