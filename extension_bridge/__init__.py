"""The bridge between an agent and the Semantest extension in its browser.

Owns the bridge protocol (`protocol.py`, pydantic models with a JSON Schema exported for the
extension), the loopback WebSocket endpoint an agent hosts (`server.py`), and the MV3
extension source in `extension/`. Imports only `semantest`; never `controller` or `agents`.
"""

from pathlib import Path

#: The unpacked MV3 extension, loaded with --load-extension.
EXTENSION_DIR = Path(__file__).resolve().parent / "extension"
