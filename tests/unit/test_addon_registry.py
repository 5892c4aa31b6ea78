"""The registry: manifests with clear errors, dependency locking, bundles, channels, resolve."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from addons import ADDONS_DIR
from addons.js_syntax import check_syntax
from addons.manifest import AddonManifest
from addons.registry import AddonVersion, DependencyError, Registry, load_addon
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


def version(
    addon_id: str, ver: str, requires: dict[str, str] | None = None, **kw: object
) -> AddonVersion:
    manifest = AddonManifest.model_validate(
        {
            "id": addon_id,
            "name": addon_id,
            "version": ver,
            "matches": kw.pop("matches", ["https://example.com/*"]),
            "requires": requires or {},
            "js": ["main.js"],
            **kw,
        }
    )
    code = f"SemantestAddon.provide({addon_id!r}, {ver!r});\n".encode()
    return AddonVersion(manifest, (("main.js", code),), 1_700_000_000.0, published=True)


def locked(v: AddonVersion, deps: dict[str, str]) -> AddonVersion:
    return replace(v, resolved=tuple(sorted(deps.items())))


def test_bundle_hashes_and_parts(tmp_path: Path) -> None:
    addon = load_addon(write_addon(tmp_path, GOOD, {"a.js": "one();", "b.js": "two();"}))
    served = Registry([addon]).get("demo")
    text = served.source.decode()
    assert text.index("one();") < text.index("two();")
    assert (
        text.startswith(";(() => {")
        and "})();\n//# sourceURL=semantest-addon://demo/1.2.3/" in text
    )
    assert served.etag == '"' + hashlib.sha256(served.source).hexdigest() + '"'
    assert (
        served.integrity
        == "sha384-" + base64.b64encode(hashlib.sha384(served.source).digest()).decode()
    )
    assert check_syntax(served.source) is None  # the wrapper keeps the bundle valid JS


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": "1.2"}, "version"),
        ({"matches": ["example.com"]}, "matches"),
        ({"matches": ["https://*.ex*.com/*"]}, "matches"),
        ({"matches": []}, "matches"),
        ({"world": "PAGE"}, "world"),
        ({"js": ["../evil.js"]}, "js"),
        ({"requires": {"other": "^^1"}}, "requires"),
        ({"requires": {"Bad Id": "^1.0.0"}}, "requires"),
        ({"id": "resolve"}, "id"),
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


def test_requires_lock_to_the_highest_satisfying_version_and_bundle_deps_first() -> None:
    libs = [version("lib", v) for v in ("1.0.0", "1.4.2", "1.10.0", "2.0.0")]
    app = version("app", "1.0.0", {"lib": "^1.2.0"})
    registry = Registry([*libs, replace(app, published=False)])  # a built-in: locked at load
    served = registry.get("app")
    assert served.addon.resolved == (("lib", "1.10.0"),)  # 1.10 > 1.4 (semver, not text)
    assert served.bundle.parts == (("lib", "1.10.0"), ("app", "1.0.0"))
    body = served.source.decode()
    assert body.index("'lib', '1.10.0'") < body.index("'app', '1.0.0'")
    assert body.count("//# sourceURL=") == 2


@pytest.mark.parametrize(
    ("versions", "message"),
    [
        ([version("app", "1.0.0", {"lib": "^1"})], r"missing dependency: app@1\.0\.0 → lib \^1"),
        (
            [
                version("app", "1.0.0", {"lib": ">=3"}),
                version("lib", "1.0.0"),
                version("lib", "2.1.0"),
            ],
            r"unsatisfiable dependency: app@1\.0\.0 → lib >=3.*known: 1\.0\.0, 2\.1\.0",
        ),
        ([version("app", "1.0.0", {"app": "*"})], r"circular dependency: app@1\.0\.0 → app"),
        (
            [
                version("a", "1.0.0", {"b": "^1"}),
                version("b", "1.0.0", {"c": "^1"}),
                version("c", "1.0.0", {"a": "^1"}),
            ],
            r"circular dependency: a@1\.0\.0 → b@1\.0\.0 → c@1\.0\.0 → a@1\.0\.0",
        ),
    ],
)
def test_dependency_errors_name_the_chain(versions: list[AddonVersion], message: str) -> None:
    with pytest.raises(DependencyError, match=message):
        Registry([replace(v, published=False) for v in versions])


def test_channels_histories_pins_and_beta_fallback() -> None:
    v1, v2, v3 = (locked(version("app", v), {}) for v in ("1.0.0", "1.1.0", "2.0.0-beta.1"))
    registry = Registry(
        [v1, v2, v3], {"app": {"stable": ["1.0.0", "1.1.0"], "beta": ["2.0.0-beta.1"]}}
    )
    assert registry.get("app").addon.version == "1.1.0"
    assert registry.get("app", channel="beta").addon.version == "2.0.0-beta.1"
    assert registry.get("app", "1.0.0").addon.version == "1.0.0"
    only_stable = Registry([v1], {"app": {"stable": ["1.0.0"]}})
    assert only_stable.get("app", channel="beta").addon.version == "1.0.0"
    with pytest.raises(AddonNotFound, match=r"no version '9\.9\.9'"):
        registry.get("app", "9.9.9")
    index = json.loads(registry.indexes["stable"][0])["addons"]
    assert [(a["id"], a["version"]) for a in index] == [("app", "1.1.0")]
    entry = index[0]
    assert entry["bundleUrl"] == f"/api/v1/addons/bundles/{entry['hash']}.js"
    assert registry.bundle(entry["hash"]) is not None


def test_resolve_bundles_every_matching_addon_once() -> None:
    lib = locked(version("lib", "1.0.0", matches=["https://nowhere.test/*"]), {})
    a = locked(
        version("a", "1.0.0", {"lib": "^1"}, matches=["*://*.example.com/*"]), {"lib": "1.0.0"}
    )
    b = locked(
        version("b", "1.0.0", {"lib": "^1"}, matches=["https://www.example.com/chat*"]),
        {"lib": "1.0.0"},
    )
    c = locked(
        version("c", "1.0.0", matches=["<all_urls>"], exclude_matches=["*://*.example.com/*"]), {}
    )
    hist = {k: {"stable": ["1.0.0"]} for k in ("lib", "a", "b", "c")}
    registry = Registry([lib, a, b, c], hist)
    matched, bundle = registry.resolve("https://www.example.com/chat?x=1#top")
    assert [s.addon.id for s in matched] == ["a", "b"]
    assert bundle.parts == (("lib", "1.0.0"), ("a", "1.0.0"), ("b", "1.0.0"))
    again = registry.resolve("https://www.example.com/chat?y=2")[1]
    assert again is bundle  # built once per set of addons
    matched, _ = registry.resolve("https://other.org/")
    assert [s.addon.id for s in matched] == ["c"]


def test_shipped_addons_load() -> None:
    registry = Registry.load(ADDONS_DIR)
    sandbox = registry.get("sandbox")
    assert sandbox.manifest.world == "USER_SCRIPT"
    assert b"SemantestAddon.define" in sandbox.source
    with pytest.raises(AddonNotFound):
        registry.get("nope")


@pytest.mark.parametrize(
    ("source", "line"),
    [(b"const a = 1;\nfunction (\n", 2), (b"ok();\nok();\nlet x = ;\n", 3), (b"a(\n", 1)],
)
def test_js_syntax_errors_give_the_line(source: bytes, line: int) -> None:
    problem = check_syntax(source)
    assert problem is not None and problem.line == line
