"""`semantest --help` as a newcomer reads it: what Semantest does, a full sentence per command,
no type labels on flags, `--version`, the `SEMANTEST_*` variables each command reads (all real
settings), and one default number of agents everywhere."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from semantest import __version__
from semantest.cli import app
from semantest.config import Settings
from semantest.stack import DEFAULT_AGENTS

pytestmark = pytest.mark.unit

runner = CliRunner()
#: Client-side variables (the SDK's and the CLI's), beside the settings of a deployment.
CLIENT_VARIABLES = {"SEMANTEST_URL", "SEMANTEST_API_KEY"}
SETTINGS_VARIABLES = {f"SEMANTEST_{name.upper()}" for name in Settings.model_fields}


def commands() -> list[list[str]]:
    """Every command path: `up`, …, `keys create`, …"""
    # typer builds on its own copy of click: tell groups by their `commands`
    group: Any = typer.main.get_command(app)
    paths = []
    for name, command in group.commands.items():
        paths += [[name, sub] for sub in getattr(command, "commands", {})]
        paths.append([name])
    return paths


def help_of(*path: str) -> str:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"semantest {__version__}"


def test_top_level_help_says_what_semantest_does_and_each_command_in_a_sentence() -> None:
    text = help_of()
    about = " ".join(text.split())
    assert (
        "Semantest turns image generators that only have a chat web page into a reliable HTTP"
        in (about)
    )
    assert "typer" not in text and "rich" not in text
    listing = text.split("Commands:")[1]
    summaries = re.findall(r"^  (\S+)\s+(.+(?:\n {4,}.+)*)", listing, re.MULTILINE)
    assert {name for name, _ in summaries} >= {"up", "demo", "submit", "keys", "watch"}
    for name, summary in summaries:
        sentence = " ".join(summary.split())
        assert sentence.endswith(".") and not sentence.endswith("..."), (name, sentence)
        assert sentence[0].isupper(), (name, sentence)


@pytest.mark.parametrize("path", commands(), ids=" ".join)
def test_each_command_explains_itself_and_names_what_it_reads(path: list[str]) -> None:
    text = help_of(*path)
    assert "<bool>" not in text
    flat = " ".join(text.split())
    assert "Environment: " in flat, path
    named = set(re.findall(r"SEMANTEST_[A-Z0-9_]+[A-Z0-9]", flat))
    assert named, path
    assert named <= SETTINGS_VARIABLES | CLIENT_VARIABLES, named - SETTINGS_VARIABLES
    for option_help in re.findall(
        r"^  --\S+(?: / --\S+)?(?: <[^>]+>)?\s+(.+)$", text, re.MULTILINE
    ):
        assert option_help[0].isupper() or option_help.startswith("["), (path, option_help)


def test_one_default_number_of_agents_everywhere(repo_root: Path) -> None:
    for command in ("up", "demo", "agents"):
        assert f"[default: {DEFAULT_AGENTS}" in help_of(command), command
    makefile = (repo_root / "Makefile").read_text()
    up = re.search(r"^up:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert up and up.group(1).split() == ["$(VENV)/bin/semantest", "up"]
    readme = (repo_root / "README.md").read_text()
    assert f"semantest up ({DEFAULT_AGENTS} agents, the default)" in readme
