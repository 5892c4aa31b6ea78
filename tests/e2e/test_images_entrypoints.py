"""The containers' entrypoints, run here, outside any container, with the containers' environment.

Each compose service's command (docker/compose.yaml: controller, webhook worker, sandbox, the
agents supervisor through docker/semantest-agents) runs as a plain process with the environment
its container would get: the image's `SEMANTEST_*` defaults (Dockerfile `ENV`) under the compose
file's, only the data directory and the Redis database moved to this test's. The stack must come
up, turn a prompt into the sandbox's exact bytes, log JSON lines on stdout, pass the health
checks the images run, and stop cleanly on SIGTERM (the agents by draining).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sandbox.render import render_png
from semantest.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
#: This test's Redis database.
DB = 63
ADMIN_KEY = "sk_admin_entrypoints_" + "e" * 16


def image_env(dockerfile: str) -> dict[str, str]:
    """The `SEMANTEST_*` variables a Dockerfile's runtime stage sets with ENV."""
    runtime = re.split(r"^FROM ", (DOCKER / dockerfile).read_text(), flags=re.M)[-1]
    found: dict[str, str] = {}
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", runtime, flags=re.M):
        for name, value in re.findall(r"(SEMANTEST_\w+)=(\S+)", block):
            found[name] = value
    return found


def compose_services(redis_port: int, port: int, sandbox_port: int) -> dict[str, Any]:
    env = {
        "PATH": os.environ["PATH"],
        "SEMANTEST_ADMIN_KEY": ADMIN_KEY,
        "SEMANTEST_REDIS_PORT": str(redis_port),
        "SEMANTEST_PORT": str(port),
        "SEMANTEST_SANDBOX_PORT": str(sandbox_port),
    }
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (make setup installs it)"
    out = subprocess.run(
        [binary, "-f", str(DOCKER / "compose.yaml"), "config"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    services: dict[str, Any] = yaml.safe_load(out)["services"]
    return services


def host_argv(command: list[str]) -> list[str]:
    """A container command as it runs from this checkout (the image's PATH has the venv)."""
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    assert command == ["semantest-agents"], command
    return ["sh", str(DOCKER / "semantest-agents")]


@pytest.fixture(scope="module")
def processes(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    port, sandbox_port = free_port(), free_port()
    services = compose_services(redis_port, port, sandbox_port)
    data = tmp_path_factory.mktemp("entrypoints")
    images = {"agent": "Dockerfile.agent"}
    started: dict[str, tuple[subprocess.Popen[bytes], Path, dict[str, str]]] = {}
    try:
        for name in ("sandbox", "controller", "webhooks", "agent"):
            service = services[name]
            env = image_env(images.get(name, "Dockerfile.controller"))
            env.update({k: str(v) for k, v in service["environment"].items()})
            assert env["SEMANTEST_REDIS_URL"] == f"redis://127.0.0.1:{redis_port}/0"
            env["SEMANTEST_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/{DB}"
            env["SEMANTEST_DATA_DIR"] = str(data)
            env["SEMANTEST_AGENT_PREFIX"] = f"entrypoints{os.getpid()}"
            full = {
                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                "HOME": str(data),
                **env,
            }
            out = data / f"{name}.stdout"
            with out.open("wb") as stdout, (data / f"{name}.stderr").open("wb") as stderr:
                proc = subprocess.Popen(
                    host_argv(service["command"]), env=full, stdout=stdout, stderr=stderr
                )
            started[name] = (proc, out, full)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            for name, (proc, _out, _env) in started.items():
                assert proc.poll() is None, (
                    f"{name} exited: {(data / f'{name}.stderr').read_text()}"
                )
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).json().get("agents") == 1:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the stack did not come up"
            time.sleep(0.2)
        yield {"url": url, "started": started, "data": data}
    finally:
        for proc, _out, _env in started.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _out, _env in started.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_prompt_through_the_container_entrypoints(processes: dict[str, Any]) -> None:
    prompt = "a tin robot watering a fern, entrypoints edition"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=processes["url"], headers=headers, timeout=10) as client:
        reply = client.post(
            "/api/v1/images/generate", json={"prompt": prompt, "provider": "sandbox"}
        )
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["jobId"]
        deadline = time.monotonic() + 60
        while (body := client.get(f"/api/v1/images/status/{job_id}").json())["status"] not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        assert body["status"] == "succeeded", body
        [image] = body["images"]
        served = client.get(image["url"], follow_redirects=True)
        expected = hashlib.sha256(render_png(prompt)).hexdigest()
        assert hashlib.sha256(served.content).hexdigest() == expected == image["sha256"]
        assert body["agent"].startswith(f"entrypoints{os.getpid()}-1/")


@pytest.mark.parametrize(
    ("role", "service"),
    [
        ("controller", "controller"),
        ("controller-live", "controller"),
        ("sandbox", "sandbox"),
        ("webhooks", "webhooks"),
        ("agent", "agent"),
        ("agent-live", "agent"),
    ],
)
def test_the_images_health_checks_pass_against_the_real_processes(
    processes: dict[str, Any], role: str, service: str
) -> None:
    env = processes["started"][service][2]
    check = subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py"), role],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_agent_health_check_fails_for_agents_of_another_container(
    processes: dict[str, Any],
) -> None:
    env = dict(processes["started"]["agent"][2], SEMANTEST_AGENT_PREFIX="some-other-container")
    check = subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py"), "agent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 1
    assert "no agent some-other-container-<n>" in check.stdout


def test_every_entrypoint_logs_json_lines_on_stdout(processes: dict[str, Any]) -> None:
    for name in ("controller", "webhooks", "agent"):
        out: Path = processes["started"][name][1]
        lines = [line for line in out.read_text().splitlines() if line.strip()]
        assert lines, f"{name} logged nothing on stdout"
        for line in lines:
            entry = json.loads(line)
            assert {"level", "message", "role"} <= set(entry), (name, line)


def test_sigterm_stops_every_entrypoint_cleanly(processes: dict[str, Any]) -> None:
    """Last in the module: SIGTERM, as Docker and Kubernetes send it; the agents drain."""
    started = processes["started"]
    for name in ("agent", "webhooks", "controller", "sandbox"):
        proc = started[name][0]
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        assert code in (0, -signal.SIGTERM), (name, code)
        if name == "agent":
            assert code == 0
            assert time.monotonic() - began < 30
