"""The images, run: docker/compose.yaml on loopback with two agent containers (`make
test-containers`; needs a Docker engine and the images `make images` builds).

One stack for the module, on free ports, torn down (volumes included) at the end: the demo's
three prompts go through it and their bytes are compared with what the sandbox renders; an
agent container is SIGKILLed mid-job and the job still succeeds, once, with the right bytes; a
stopped agent fails its health check; `docker-compose stop` drains the agents within their stop
period while a job finishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.render import render_png
from semantest.demo import DEFAULT_PROMPTS
from semantest.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
AGENTS = 2
#: The sandbox answers after this long, so a test can act on a job while it runs.
LATENCY_MS = 2000


@dataclass
class Compose:
    project: str
    env: dict[str, str]
    url: str
    admin_key: str

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        binary = shutil.which("docker-compose") or "docker-compose"
        return subprocess.run(
            [binary, "-p", self.project, "-f", str(COMPOSE), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def containers(self, service: str) -> list[str]:
        out = self.run("ps", "-q", service).stdout.split()
        return [c for c in out if c]

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=10
        )


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def inspect(container: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(docker("inspect", container).stdout)[0]
    return info


def wait_for(what: str, check: Any, timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


@pytest.fixture(scope="module")
def stack() -> Iterator[Compose]:
    ports = {name: str(free_port()) for name in ("redis", "controller", "sandbox")}
    admin_key = "sk_admin_" + os.urandom(18).hex()
    env = {
        "PATH": os.environ["PATH"],
        "SEMANTEST_ADMIN_KEY": admin_key,
        "SEMANTEST_REDIS_PORT": ports["redis"],
        "SEMANTEST_PORT": ports["controller"],
        "SEMANTEST_SANDBOX_PORT": ports["sandbox"],
        "SEMANTEST_SANDBOX_LATENCY_MS": str(LATENCY_MS),
    }
    compose = Compose(
        f"semantest-test-{os.getpid()}", env, f"http://127.0.0.1:{ports['controller']}", admin_key
    )
    up = compose.run("up", "-d", "--no-build", "--scale", f"agent={AGENTS}")
    try:
        assert up.returncode == 0, up.stderr
        wait_for(
            f"{AGENTS} agents alive",
            lambda: (
                httpx.get(f"{compose.url}/api/v1/health", timeout=2).json().get("agents") == AGENTS
            ),
            timeout=120,
        )
        yield compose
    finally:
        if up.returncode != 0 or os.environ.get("SEMANTEST_TEST_CONTAINERS_LOGS"):
            print(compose.run("logs", "--no-color", "--tail", "40").stdout)
        down = compose.run("down", "-v", "-t", "60")
        assert down.returncode == 0, down.stderr


def generate(client: httpx.Client, prompt: str) -> str:
    reply = client.post("/api/v1/images/generate", json={"prompt": prompt, "provider": "sandbox"})
    assert reply.status_code == 202, reply.text
    job_id: str = reply.json()["jobId"]
    return job_id


def record(client: httpx.Client, job_id: str) -> dict[str, Any]:
    reply = client.get(f"/api/v1/images/status/{job_id}")
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def finished(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    body: dict[str, Any] = wait_for(
        f"job {job_id} finished",
        lambda: (
            (r := record(client, job_id))["status"] in ("succeeded", "failed", "canceled") and r
        ),
        timeout,
    )
    return body


def assert_exact_image(client: httpx.Client, body: dict[str, Any], prompt: str) -> None:
    assert body["status"] == "succeeded", body.get("error")
    [image] = body["images"]
    expected = hashlib.sha256(render_png(prompt)).hexdigest()
    assert image["sha256"] == expected
    served = client.get(image["url"], follow_redirects=True)
    assert served.status_code == 200
    assert hashlib.sha256(served.content).hexdigest() == expected


def test_every_container_is_healthy_non_root_and_logs_json(stack: Compose) -> None:
    services = ("redis", "controller", "webhooks", "sandbox", "agent")
    for service in services:
        containers = stack.containers(service)
        assert len(containers) == (AGENTS if service == "agent" else 1), service
        for container in containers:
            wait_for(
                f"{service} healthy",
                lambda c=container: inspect(c)["State"]["Health"]["Status"] == "healthy",
                timeout=60,
            )
            user = docker("exec", container, "id", "-u").stdout.strip()
            assert user == "10001", (service, user)
            assert inspect(container)["HostConfig"]["ReadonlyRootfs"] is True, service
    for service in ("controller", "webhooks", "agent"):
        container = stack.containers(service)[0]
        logs = docker("logs", container)
        lines = [line for line in logs.stdout.splitlines() if line.strip()]
        assert lines, f"{service} wrote nothing to stdout"
        for line in lines:
            entry = json.loads(line)
            assert {"level", "message"} <= set(entry), (service, line)


def test_the_demo_prompts_come_back_as_the_exact_bytes(stack: Compose) -> None:
    with stack.client() as client:
        jobs = {generate(client, prompt): prompt for prompt in DEFAULT_PROMPTS}
        agents = set()
        for job_id, prompt in jobs.items():
            body = finished(client, job_id)
            assert_exact_image(client, body, prompt)
            assert body["attempts"] == 1
            agents.add(body["agent"].split("/")[0])
    prefixes = {c[:12] for c in stack.containers("agent")}
    assert agents <= {f"{p}-1" for p in prefixes}, (agents, prefixes)


def test_figures_of_the_running_containers(
    stack: Compose, capsys: pytest.CaptureFixture[str]
) -> None:
    """Memory and size as Docker reports them (cgroup memory: anonymous + page cache of the
    container), printed for docs/deploy.md's sizing; checked against the manifests' limits."""
    rows = []
    for service in ("controller", "webhooks", "sandbox", "redis", "agent"):
        for container in stack.containers(service):
            stats = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", container)
            used = stats.stdout.split("/")[0].strip()
            rows.append((service, container[:12], used))
    image_sizes = docker(
        "image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}", "semantest/*"
    ).stdout.strip()
    with capsys.disabled():
        print("\n  container memory after the demo prompts (docker stats):")
        for service, container, used in rows:
            print(f"    {service:<10} {container}  {used}")
        print("  images:\n    " + image_sizes.replace("\n", "\n    "))

    def mib(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)([KMG]i?B)", text).groups()  # type: ignore[union-attr]
        return float(number) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]

    agents = [mib(used) for service, _c, used in rows if service == "agent"]
    assert agents and max(agents) < 1536  # the agents' memory limit in docker/k8s/base


def test_an_agent_container_killed_mid_job_loses_nothing(stack: Compose) -> None:
    prompt = "a paper boat crossing a puddle, killed container edition"
    with stack.client() as client:
        job_id = generate(client, prompt)
        running = wait_for(
            "job running",
            lambda: (r := record(client, job_id))["status"] == "running" and r,
            timeout=60,
            every=0.1,
        )
        victim_prefix = running["agent"].split("-")[0]
        [victim] = [c for c in stack.containers("agent") if c.startswith(victim_prefix)]
        assert docker("kill", victim).returncode == 0  # SIGKILL: no drain, no goodbye
        body = finished(client, job_id, timeout=120)
        assert_exact_image(client, body, prompt)
        assert body["attempts"] == 2, body
    assert inspect(victim)["State"]["ExitCode"] == 137


def test_the_agent_health_check_asks_the_agent(stack: Compose) -> None:
    def live_agent() -> str | None:
        for container in stack.containers("agent"):
            if inspect(container)["State"]["Running"]:
                return container
        return None

    container = wait_for("a running agent container", live_agent, timeout=30)
    check = ["exec", container, "python", "/usr/local/bin/semantest-healthcheck", "agent"]
    wait_for("agent healthy", lambda: docker(*check).returncode == 0, timeout=60)
    # the agent's own process (not the pool): its heartbeat names its pid in the container
    with stack.client() as client:
        fleet = client.get("/api/v1/fleet").json()["agents"]
    pids = [str(a["pid"]) for a in fleet if a["id"].startswith(container[:12])]
    assert len(pids) == 1, fleet
    assert docker("exec", container, "kill", "-STOP", pids[0]).returncode == 0
    try:
        failed = wait_for(
            "health check fails while the agent is stopped",
            lambda: (r := docker(*check)).returncode == 1 and r.stdout,
            timeout=30,
        )
        assert "no agent" in failed
    finally:
        docker("exec", container, "kill", "-CONT", pids[0])
    wait_for("health check passes again", lambda: docker(*check).returncode == 0, timeout=30)


def test_stopping_the_agents_drains_them_within_their_stop_period(stack: Compose) -> None:
    prompt = "a lantern at the end of a pier, drained edition"
    with stack.client() as client:
        wait_for(
            "an agent alive",
            lambda: httpx.get(f"{stack.url}/api/v1/health", timeout=2).json().get("agents", 0) >= 1,
            timeout=60,
        )
        job_id = generate(client, prompt)
        wait_for(
            "job running",
            lambda: record(client, job_id)["status"] == "running",
            timeout=60,
            every=0.1,
        )
        running = [c for c in stack.containers("agent") if inspect(c)["State"]["Running"]]
        started = time.monotonic()
        stop = stack.run("stop", "agent", timeout=120)
        took = time.monotonic() - started
        assert stop.returncode == 0, stop.stderr
        body = finished(client, job_id, timeout=10)
        assert_exact_image(client, body, prompt)  # finished during the drain, not re-run
        assert body["attempts"] == 1
    # the pool exits 0 once its agents drained; Docker's SIGKILL at the stop period gives 137
    assert running
    for container in running:
        assert inspect(container)["State"]["ExitCode"] == 0, inspect(container)["State"]
    assert took < 50, f"stopping took {took:.1f} s: the drain ran into the stop period"
