"""Stacks never collide: a newcomer's second `semantest up` or `demo` while one already runs.

Two stacks run side by side on their own ports and data dirs (no agents: none is needed to see
which controller answers); a second `up`/`demo` on a busy port stops with the one clear line and
leaves the first stack's logs byte for byte as they were; a stack never takes another run's
controller for its own; `demo --url` runs against a stack that already runs.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.render import render_png
from semantest.stack import Stack, StackInUse, free_port
from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import stack_settings

pytestmark = pytest.mark.e2e

SEMANTEST = [sys.executable, "-m", "semantest.cli"]


@pytest.fixture(scope="module")
def first(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running stack without agents (Redis database 51)."""
    with Stack(stack_settings(redis_url, 51, tmp_path_factory.mktemp("first")), agents=0) as s:
        yield s


@pytest.fixture(scope="module")
def second(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Another one beside it (Redis database 52)."""
    with Stack(stack_settings(redis_url, 52, tmp_path_factory.mktemp("second")), agents=0) as s:
        yield s


def logs_of(stack: Stack) -> dict[str, bytes]:
    """Every log file of a stack and its bytes."""
    return {p.name: p.read_bytes() for p in sorted(stack.logs_dir.iterdir())}


def env_for(stack_port: int, sandbox_port: int, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMANTEST_")}
    env.update(
        SEMANTEST_PORT=str(stack_port),
        SEMANTEST_SANDBOX_PORT=str(sandbox_port),
        SEMANTEST_DATA_DIR=str(data_dir),
    )
    return env


def test_two_stacks_run_side_by_side_each_answering_with_its_own_run(
    first: Stack, second: Stack
) -> None:
    assert first.run_id != second.run_id
    for stack in (first, second):
        health = httpx.get(f"{stack.url}/api/v1/health").json()
        assert health["status"] == "ok" and health["runId"] == stack.run_id
        sandbox = httpx.get(f"{stack.settings.sandbox_url}/health").json()
        assert sandbox["runId"] == stack.run_id
    with httpx.Client(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        job = http.post(f"{first.url}/api/v1/images/generate", json={"prompt": "only first's"})
        job_id = job.json()["jobId"]
        assert http.get(f"{first.url}/api/v1/images/status/{job_id}").status_code == 200
        assert http.get(f"{second.url}/api/v1/images/status/{job_id}").status_code == 404


@pytest.mark.parametrize("command", ["up", "demo"])
def test_a_second_run_on_a_busy_port_stops_with_one_line_and_leaves_the_logs(
    first: Stack, command: str
) -> None:
    before = logs_of(first)
    assert before["controller.log"], "the first stack's controller logged nothing"
    # What a newcomer does: the same data dir and ports as the running `make up`.
    env = env_for(first.settings.port, first.settings.sandbox_port, first.settings.data_dir)
    argv = [*SEMANTEST, command, "--agents", "1"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    line = (
        f"port {first.settings.port} is in use — is another semantest up running? "
        "set SEMANTEST_PORT"
    )
    assert done.stderr.splitlines()[0].startswith(line), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert logs_of(first) == before, "the second run touched the first stack's logs"
    assert httpx.get(f"{first.url}/api/v1/health").json()["runId"] == first.run_id


def test_the_sandbox_port_and_the_data_dir_are_checked_too(first: Stack, tmp_path: Path) -> None:
    env = env_for(free_port(), first.settings.sandbox_port, tmp_path / "data")
    done = subprocess.run(
        [*SEMANTEST, "up", "--agents", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"port {first.settings.sandbox_port} is in use — is another semantest up running? "
        "set SEMANTEST_SANDBOX_PORT"
    )
    before = logs_of(first)
    env = env_for(free_port(), free_port(), first.settings.data_dir)
    done = subprocess.run(
        [*SEMANTEST, "up", "--agents", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "is in use — is another semantest up running? set SEMANTEST_DATA_DIR" in done.stderr
    assert logs_of(first) == before


def test_a_stack_never_takes_another_runs_controller_for_its_own(
    first: Stack, tmp_path: Path
) -> None:
    # What the up-front check cannot see: the port taken between the check and the bind. The
    # readiness check itself must refuse a controller whose /health carries another run's id.
    settings = first.settings.model_copy(update={"run_id": None, "data_dir": tmp_path})
    intruder = Stack(settings, agents=0)
    assert intruder.run_id != first.run_id
    with pytest.raises(StackInUse, match=f"port {first.settings.port} is in use"):
        intruder._wait_own(
            f"{first.url}/api/v1/health",
            first.settings.port,
            "SEMANTEST_PORT",
            time.monotonic() + 5,
        )


def test_logs_are_appended_across_runs(redis_url: str, tmp_path: Path) -> None:
    settings = stack_settings(redis_url, 53, tmp_path)
    (tmp_path / "logs").mkdir()
    earlier = b"evidence of an earlier run\n"
    (tmp_path / "logs" / "controller.log").write_bytes(earlier)
    with Stack(settings, agents=0) as stack:
        pass
    text = (tmp_path / "logs" / "controller.log").read_bytes()
    assert text.startswith(earlier) and b"\0" not in text
    assert f"run {stack.run_id}: controller starts".encode() in text


def test_up_without_agents_says_that_jobs_will_wait(tmp_path: Path) -> None:
    env = env_for(free_port(), free_port(), tmp_path / "data")
    proc = subprocess.Popen(
        [*SEMANTEST, "up", "--agents", "0"], env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = " ".join(" ".join(lines).split())
        assert "no agents: jobs you submit will wait in the queue" in text, text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_demo_runs_against_a_stack_that_already_runs(stack: Stack) -> None:
    prompt = "a newcomer's demo against a running stack"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMANTEST_")}
    done = subprocess.run(
        [*SEMANTEST, "demo", "--url", stack.url, prompt],
        env=env | {"SEMANTEST_API_KEY": ADMIN_KEY},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    urls = done.stdout.split()
    assert len(urls) == 1 and urls[0].startswith(stack.url), done.stdout
    digest = hashlib.sha256(render_png(prompt)).hexdigest()
    assert urls[0].endswith(f"/{digest}.png")
    # no key: one line that says which variable to set, before any request
    done = subprocess.run(
        [*SEMANTEST, "demo", "--url", stack.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "set SEMANTEST_API_KEY" in done.stderr
