"""docs/providers.md's example, run as written: a project of its own (a made-up chat UI's
replica, its addon requiring Semantest's `chatkit`, a conftest and a test file), run by pytest
in a subprocess with the plugin's fixtures. Its tests pass; with the page changed under the
addon (the picture gone), they fail with the addon's error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.e2e

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


def guide_files() -> dict[str, str]:
    """Each file of the guide's example: a fenced block right after a line naming it (**`x`**)."""
    files: dict[str, str] = {}
    name: str | None = None
    lines = iter(GUIDE.read_text().splitlines())
    for line in lines:
        if found := re.fullmatch(r"\*\*`([\w./-]+)`\*\*", line):
            name = found.group(1)
        elif name is not None and line.startswith("```"):
            body = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                body.append(inner)
            files[name] = "\n".join(body) + "\n"
            name = None
    return files


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_guide_example_is_a_whole_project() -> None:
    files = guide_files()
    assert sorted(files) == [
        "conftest.py",
        "my_addons/pixelchat/addon.json",
        "my_addons/pixelchat/driver.js",
        "my_addons/pixelchat/selectors.js",
        "site/pixelchat/index.html",
        "test_pixelchat.py",
    ]
    manifest = json.loads(files["my_addons/pixelchat/addon.json"])
    assert (manifest["provider"], manifest["requires"]) == ("pixelchat", {"chatkit": "^1.0.0"})


def test_the_guide_example_passes(pytester: pytest.Pytester) -> None:
    write(pytester.path, guide_files())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=2)


def test_the_guide_example_fails_when_the_page_changes(pytester: pytest.Pytester) -> None:
    files = guide_files()
    page = files["site/pixelchat/index.html"]
    files["site/pixelchat/index.html"] = page.replace(
        "new Image()", 'document.createElement("span")'
    )
    write(pytester.path, files)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "picture", timeout=180)
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*NO_IMAGE*"])
