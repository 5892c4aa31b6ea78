"""`semantest up` and `semantest demo` as a user runs them: real subprocesses, real signals.

"No orphan" is checked on the whole process tree (agents, Playwright's driver, Chromium and its
helpers, redis-server), read from /proc before the stop.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sandbox.render import render_png
from semantest.stack import free_port
from tests.e2e.conftest import wait_final

pytestmark = pytest.mark.e2e

SEMANTEST = [sys.executable, "-m", "semantest.cli"]


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        children = {p for p, ppid in parents.items() if ppid == current}
        frontier.extend(children - found)
        found |= children
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids still running (zombies count as gone)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)


def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMANTEST_")}
    env.update(
        SEMANTEST_PORT=str(free_port()),
        SEMANTEST_SANDBOX_PORT=str(free_port()),
        SEMANTEST_DATA_DIR=str(tmp_path / "data"),
    )
    return env


def start_up(tmp_path: Path) -> tuple[subprocess.Popen[str], str, str]:
    """`semantest up --agents 1` until it prints the admin key; (process, url, key)."""
    proc = subprocess.Popen(
        [*SEMANTEST, "up", "--agents", "1"],
        env=stack_env(tmp_path),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    text = "".join(lines)
    url = re.search(r"controller\s+(http://\S+)", text)
    key = re.search(r"admin key\s+(\S+)", text)
    assert url and key, text
    return proc, url.group(1), key.group(1)


def test_up_serves_jobs_and_sigterm_stops_every_process(tmp_path: Path) -> None:
    proc, url, key = start_up(tmp_path)
    try:
        tree = descendants(proc.pid)
        commands = " ".join(Path(f"/proc/{p}/cmdline").read_text() for p in alive(tree))
        for part in ("redis-server", "controller", "sandbox", "agents", "chromium"):
            assert part in commands, f"{part} is not running under semantest up"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as api:
            job = api.post("/api/v1/images/generate", json={"prompt": "up and running"})
            record = wait_final(api, job.json()["jobId"])
        assert record["status"] == "succeeded", record.get("error")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert wait_gone(tree, 10) == set(), "processes left behind after SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_killing_up_outright_still_leaves_no_orphans(tmp_path: Path) -> None:
    proc, _url, _key = start_up(tmp_path)
    tree = descendants(proc.pid)
    assert len(alive(tree)) >= 5
    proc.kill()  # SIGKILL: no cleanup code of ours runs in the parent
    proc.wait()
    assert wait_gone(tree, 30) == set(), "children outlived a SIGKILLed semantest up"


def test_demo_prints_paths_of_the_exact_bytes(tmp_path: Path) -> None:
    prompts = ["a demo kite", "a demo lantern"]
    done = subprocess.run(
        [*SEMANTEST, "demo", "--agents", "1", *prompts],
        env=stack_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    paths = [Path(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(paths) == len(prompts), done.stdout
    for prompt, path in zip(prompts, paths, strict=True):
        expected = render_png(prompt)
        assert path.read_bytes() == expected
        assert path.name == hashlib.sha256(expected).hexdigest() + ".png"
        assert path.is_relative_to(tmp_path)
    assert "stopped cleanly" in done.stderr
