"""`semantest fleet` and `GET /api/v1/fleet` against the running stack with a real agent.

The number of slots and their states belong to the agent side and may change; these tests only
rely on the heartbeat contract (`semantest.fleet.AgentHeartbeat`).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis
from pydantic import ValidationError

from semantest import keys
from semantest.fleet import AgentHeartbeat
from semantest.stack import Stack, free_port
from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.e2e

SEMANTEST = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "semantest")


def run_fleet(url: str, key: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMANTEST_")}
    env |= {"SEMANTEST_URL": url, "COLUMNS": "250", "NO_COLOR": "1"}
    if key is not None:
        env["SEMANTEST_API_KEY"] = key
    return subprocess.run(
        [SEMANTEST, "fleet", *args], env=env, capture_output=True, text=True, timeout=30
    )


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def live_agents(api: httpx.Client, stack: Stack, timeout: float = 15) -> list[dict[str, Any]]:
    """The fleet's agents once at least one is listed; a heartbeat that breaks the
    `AgentHeartbeat` contract fails the test."""
    assert stack.settings.redis_url
    r = redis.Redis.from_url(stack.settings.redis_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            reply = api.get("/api/v1/fleet")
            assert reply.status_code == 200, reply.text
            agents: list[dict[str, Any]] = reply.json()["agents"]
            if agents:
                return agents
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        ids = [m.decode() for m in r.zrange(keys.AGENTS, 0, -1)]
        raws = [r.get(keys.agent(i)) for i in ids]
    finally:
        r.close()
    assert ids, "no agent is registered in Redis"
    for raw in raws:
        if raw is None:
            continue
        try:
            AgentHeartbeat.model_validate_json(raw)
        except ValidationError as exc:
            raise AssertionError(f"agent heartbeat breaks the contract: {exc}") from None
    raise AssertionError(f"agents {ids} registered but /fleet lists none")


def test_fleet_lists_the_agent_with_a_live_pid(stack: Stack, api: httpx.Client) -> None:
    agents = live_agents(api, stack)
    assert any(pid_alive(a["pid"]) for a in agents), agents
    pool = next(c for c in stack.children if c.name == "agents")  # the pool supervisor
    ours = {p.pid for p in psutil.Process(pool.proc.pid).children()}
    assert ours & {a["pid"] for a in agents}
    for agent in agents:
        assert agent["slots"], agent  # an agent that is ready has at least one slot
        assert {"host", "jobsDone", "rssBytes", "readyAfterS", "addons"} <= set(agent)
        for slot in agent["slots"]:
            assert {"state", "jobId", "parkedReason", "account"} <= set(slot)
    totals = api.get("/api/v1/fleet").json()["totals"]
    assert totals["agents"] >= 1 and totals["slots"] >= 1


def test_fleet_once_prints_agent_id_and_pid(stack: Stack, api: httpx.Client) -> None:
    agents = live_agents(api, stack)
    done = run_fleet(stack.url, ADMIN_KEY, "--once")
    assert done.returncode == 0, done.stderr
    listed = [a for a in agents if a["id"] in done.stdout]
    assert listed, done.stdout
    assert any(str(a["pid"]) in done.stdout for a in listed), done.stdout
    assert "Traceback" not in done.stderr


def test_fleet_once_without_agents_or_errors_says_so(stack: Stack) -> None:
    # refused key: exit 1 with a message, no traceback
    refused = run_fleet(stack.url, "sk_wrong", "--once")
    assert refused.returncode == 1
    assert "refused the API key" in refused.stderr and "Traceback" not in refused.stderr
    # nothing listening: exit 1 with a message, no traceback
    down = run_fleet(f"http://127.0.0.1:{free_port()}", ADMIN_KEY, "--once")
    assert down.returncode == 1
    assert "cannot reach the controller" in down.stderr and "Traceback" not in down.stderr
