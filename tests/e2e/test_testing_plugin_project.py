"""The plugin as a third party gets it: a small project of its own (an addon folder, a static
page served by its own server, a test file importing nothing of ours), the complete example of
docs/testing-extensions.md, run by pytest in a subprocess as after `pip install semantest`.
Its tests pass; a broken addon fails them with a readable message and leaves each page's
screenshot, DOM and console log in test-results/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
#: The page whose complete example is the project: each file is a fenced block right after a
#: line naming it in bold code (**`conftest.py`**).
EXAMPLE_DOC = ROOT / "docs" / "testing-extensions.md"

BROKEN_JS = """
throw new Error("greeter is broken: it lost its heading");
"""


def example_files() -> dict[str, str]:
    """The files of the docs' complete example, by path."""
    files: dict[str, str] = {}
    name: str | None = None
    lines = iter(EXAMPLE_DOC.read_text().splitlines())
    for line in lines:
        if found := re.fullmatch(r"\*\*`([\w./-]+)`\*\*", line):
            name = found.group(1)
        elif name is not None and line.startswith("```"):
            body: list[str] = []
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


def test_the_docs_example_is_a_whole_project() -> None:
    files = example_files()
    assert sorted(files) == [
        "conftest.py",
        "my_addons/greeter/addon.json",
        "my_addons/greeter/greeter.js",
        "site/index.html",
        "test_greeter.py",
    ]
    assert json.loads(files["my_addons/greeter/addon.json"])["id"] == "greeter"
    ours = re.compile(r"^\s*(from|import) (tests|semantest|controller|agents)\b", re.M)
    assert not ours.search(files["test_greeter.py"] + files["conftest.py"])


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    files = example_files()
    files["broken_addons/greeter/addon.json"] = files["my_addons/greeter/addon.json"]
    files["broken_addons/greeter/greeter.js"] = BROKEN_JS
    write(pytester.path, files)
    return pytester.path


def test_an_outside_project_tests_its_addon(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=3)
    assert not (project / "test-results").exists()  # nothing kept for passing tests


def test_a_broken_addon_fails_readably_and_leaves_artifacts(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--addons-dir", "broken_addons", timeout=180
    )
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    readable = (
        r"AssertionError: addon 'greeter' did not report ready in "
        r"http://127\.0\.0\.1:\d+/index\.html within 5 s\.\n"
        r"E +The extension registered \['greeter'\] \(user scripts on\)\.\n"
        r"E +The page's console errors:\n"
        r"E +\[pageerror\] Error: greeter is broken: it lost its heading"
    )
    assert len(re.findall(readable, out)) == 2, out
    folders = sorted(p.name for p in (project / "test-results").iterdir())
    assert folders == [
        "test-greeter-py-test-the-greeter-answers-a-job-chromium",
        "test-greeter-py-test-the-greeter-changes-the-heading-chromium",
    ]
    for folder in folders:
        kept = project / "test-results" / folder
        assert (kept / "test-failed-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        dom = (kept / "page-1.html").read_text()
        assert "<h1>Welcome</h1>" in dom  # the addon never changed it
        console = (kept / "console-1.log").read_text()
        assert re.search(r"greeter is broken: it lost its heading", console), console
