"""Addons: provider driver scripts the extension injects by domain, and their registry.

Each addon is a folder `addons/<id>/` with `addon.json` and its JS files; `registry.py`
validates manifests and builds each addon's served source with its hashes. Imports only
`semantest`; never `controller` or `agents`.
"""

from pathlib import Path

#: Where the addons shipped with Semantest live.
ADDONS_DIR = Path(__file__).resolve().parent
