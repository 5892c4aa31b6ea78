"""The code examples of the user docs, run against the real stack, so what readers copy works.

Every ```python block of a page runs, in page order, in one Python process (a later block may
use what an earlier one defined, as in a reader's session) with SEMANTEST_URL and
SEMANTEST_API_KEY set; a traceback points at the page and its own line numbers. Every ```sh
block runs in bash with the venv's `semantest` on PATH, in one working directory per page.
```console blocks (a server in the foreground, placeholders to fill in) are shown, not run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from semantest.stack import Stack
from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["docs/quickstart.md", "docs/partner-guide.md"]
SHELL_DOCS = ["docs/quickstart.md"]
FENCE = re.compile(r"^```(\w*)\s*$")

#: Runs the blocks it reads from stdin (`[page, [[first line, code], ...]]`) in one namespace,
#: each compiled as if it stood at its line of the page.
RUNNER = """
import json, sys
page, blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for line, code in blocks:
    exec(compile("\\n" * (line - 1) + code, page, "exec"), namespace)
"""


def code_blocks(page: str, language: str) -> list[tuple[int, str]]:
    """The page's fenced blocks in `language`: (line number of their first line, code)."""
    found: list[tuple[int, str]] = []
    inside: str | None = None  # the language of the open fence
    code: list[str] = []
    start = 0
    for number, line in enumerate((ROOT / page).read_text().splitlines(), start=1):
        if inside is None:
            if fence := FENCE.match(line):
                inside, code, start = fence.group(1), [], number + 1
        elif line.startswith("```"):
            if inside == language:
                found.append((start, "\n".join(code) + "\n"))
            inside = None
        else:
            code.append(line)
    return found


def reader_env(stack: Stack) -> dict[str, str]:
    """A reader's shell after the quickstart's exports and `source .venv/bin/activate`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMANTEST_")}
    env |= {"SEMANTEST_URL": stack.url, "SEMANTEST_API_KEY": ADMIN_KEY, "NO_COLOR": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.parametrize("page", DOCS)
def test_python_examples_run(page: str, stack: Stack, tmp_path: Path) -> None:
    blocks = code_blocks(page, "python")
    assert blocks, f"{page} has no python examples"
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps([page, blocks]),
        cwd=tmp_path,
        env=reader_env(stack),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout, done.stdout


@pytest.mark.parametrize("page", SHELL_DOCS)
def test_shell_examples_run(page: str, stack: Stack, tmp_path: Path) -> None:
    blocks = code_blocks(page, "sh")
    assert blocks, f"{page} has no sh examples"
    for line, code in blocks:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=tmp_path,
            env=reader_env(stack),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{page}:{line}\n{code}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, f"{page}:{line}\n{done.stderr}"


def test_block_extraction_reads_fences_and_their_lines() -> None:
    (first, *_rest) = code_blocks("docs/quickstart.md", "python")
    lines = (ROOT / "docs/quickstart.md").read_text().splitlines()
    assert lines[first[0] - 2] == "```python"
    assert first[1].startswith(lines[first[0] - 1])
    assert not any("```" in code for _line, code in code_blocks("docs/quickstart.md", "sh"))
