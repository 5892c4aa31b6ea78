"""Addon manifests are validated with clear errors; sources are hashed once."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from addons import ADDONS_DIR
from addons.registry import Registry, load_addon
from semantest.errors import AddonNotFound, ValidationError

pytestmark = pytest.mark.unit

GOOD = {
    "id": "demo",
    "name": "Demo",
    "version": "1.2.3",
    "matches": ["https://example.com/*"],
    "js": ["a.js", "b.js"],
}


def write_addon(root: Path, manifest: dict[str, object], files: dict[str, str]) -> Path:
    folder = root / str(manifest.get("id", "x"))
    folder.mkdir(parents=True)
    (folder / "addon.json").write_text(json.dumps(manifest))
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_source_and_hashes(tmp_path: Path) -> None:
    addon = load_addon(write_addon(tmp_path, GOOD, {"a.js": "one();", "b.js": "two();"}))
    text = addon.source.decode()
    assert text.index("one();") < text.index("two();")
    assert addon.etag == '"' + hashlib.sha256(addon.source).hexdigest() + '"'
    assert (
        addon.integrity
        == "sha384-" + base64.b64encode(hashlib.sha384(addon.source).digest()).decode()
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": "1.2"}, "version"),
        ({"matches": ["example.com"]}, "matches"),
        ({"matches": []}, "matches"),
        ({"world": "PAGE"}, "world"),
        ({"js": ["../evil.js"]}, "js"),
        ({"requires": {"other": "^1.0.0"}}, "requires"),
        ({"unknown": True}, "unknown"),
    ],
)
def test_bad_manifests_name_the_field(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    folder = write_addon(tmp_path, {**GOOD, **change}, {"a.js": "", "b.js": ""})
    with pytest.raises(ValidationError) as info:
        load_addon(folder)
    assert field in {d["field"].split(".")[0] for d in info.value.details}


def test_missing_js_file_and_id_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"b\.js"):
        load_addon(write_addon(tmp_path, GOOD, {"a.js": ""}))
    folder = write_addon(tmp_path / "other", {**GOOD, "id": "demo"}, {"a.js": "", "b.js": ""})
    folder.rename(tmp_path / "other" / "renamed")
    with pytest.raises(ValidationError, match="folder"):
        load_addon(tmp_path / "other" / "renamed")


def test_shipped_addons_load() -> None:
    registry = Registry.load(ADDONS_DIR)
    sandbox = registry.get("sandbox")
    assert sandbox.manifest.world == "USER_SCRIPT"
    assert b"SemantestAddon.define" in sandbox.source
    with pytest.raises(AddonNotFound):
        registry.get("nope")
