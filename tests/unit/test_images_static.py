"""The images without a Docker engine: hadolint, the pins, and what each Dockerfile promises.

Building and running them is `make test-containers` (tests/containers/).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent
DOCKERFILES = ["Dockerfile.controller", "Dockerfile.agent", "Dockerfile.redis"]


def stages(dockerfile: str) -> list[str]:
    """The Dockerfile's text split at each FROM; the last one is the runtime image."""
    text = (DOCKER / dockerfile).read_text()
    return re.split(r"^FROM ", text, flags=re.M)[1:]


def healthcheck_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "semantest_healthcheck", DOCKER / "healthcheck.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile: str) -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--config", str(DOCKER / ".hadolint.yaml"), dockerfile],
        cwd=DOCKER,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run(
        [str(BIN / "hadolint"), "--config", str(DOCKER / ".hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "DL3015" in result.stdout  # --no-install-recommends missing


def test_pins_match_the_venv_and_pyproject() -> None:
    result = subprocess.run(
        [sys.executable, str(DOCKER / "lock.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_controller_image_has_no_browser_stack() -> None:
    controller = (DOCKER / "requirements-controller.txt").read_text()
    agent = (DOCKER / "requirements-agent.txt").read_text()
    assert "playwright==" not in controller
    assert "playwright==" in agent
    assert "chromium" not in stages("Dockerfile.controller")[-1]
    assert "chromium" in stages("Dockerfile.agent")[-1]


@pytest.mark.parametrize("dockerfile", ["Dockerfile.controller", "Dockerfile.agent"])
def test_runtime_stage_is_lean_non_root_and_checks_its_process(dockerfile: str) -> None:
    runtime = stages(dockerfile)[-1]
    build = stages(dockerfile)[0]
    # build tools stay in the build stage: no venv module, pip or compilers at runtime
    for tool in ("python3-venv", "python3-pip", "build-essential", "gcc", "pip install"):
        assert tool not in runtime, tool
    assert "pip uninstall -y pip setuptools" in build
    assert "--no-install-recommends" in runtime
    assert "rm -rf /var/lib/apt/lists/*" in runtime
    user = re.search(r"^USER (\S+)", runtime, flags=re.M)
    assert user and user.group(1).split(":")[0].isdigit() and user.group(1).split(":")[0] != "0"
    check = re.search(r"^HEALTHCHECK .*\n?.*CMD (\[.*\])", runtime, flags=re.M)
    assert check, "no HEALTHCHECK"
    role = check.group(1).split(",")[-1].strip(' "]')
    assert role in healthcheck_module().CHECKS
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in runtime


def test_images_run_the_commands_semantest_up_runs() -> None:
    controller = stages("Dockerfile.controller")[-1]
    agent = stages("Dockerfile.agent")[-1]
    assert 'CMD ["python", "-m", "controller"]' in controller
    assert 'CMD ["semantest-agents"]' in agent
    script = (DOCKER / "semantest-agents").read_text()
    assert "exec python -m agents.pool" in script
    stack = (ROOT / "semantest" / "stack.py").read_text()
    for module in ("controller", "agents.pool", "semantest.webhook_worker", "sandbox"):
        assert f'"-m", "{module}"' in stack or f'"-m",\n                "{module}"' in stack, module


def test_dockerignore_keeps_the_context_to_what_the_images_copy() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is excluded first, then what the images need"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied: set[str] = set()
    for dockerfile in ("Dockerfile.controller", "Dockerfile.agent"):
        for match in re.finditer(
            r"^COPY (?!--from)(.+) \S+$", (DOCKER / dockerfile).read_text(), re.M
        ):
            copied.update(match.group(1).split())
    for source in copied:
        assert source in allowed or any(
            re.fullmatch(p.replace(".", r"\.").replace("*", ".*"), source) for p in allowed
        ), f"{source} is copied but excluded by .dockerignore"
    for never in ("data", ".venv", "tests", ".git", "bench"):
        assert never not in allowed


def test_base_image_script_finds_the_mirror_apt_uses() -> None:
    script = (DOCKER / "base-image.sh").read_text()
    assert "debootstrap --variant=minbase" in script
    assert "docker import" in script
    assert subprocess.run(["sh", "-n", str(DOCKER / "base-image.sh")]).returncode == 0
