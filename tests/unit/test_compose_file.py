"""docker/compose.yaml without a Docker engine: docker-compose validates it, and it promises
what the stack needs (running it is `make test-containers`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from agents.pool import KILL_MARGIN_S

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
POOL_EXIT_S = 5


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (make setup installs it)"
    return subprocess.run(
        [binary, "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **env},
    )


def resolved(**env: str) -> dict[str, Any]:
    result = compose_config(SEMANTEST_ADMIN_KEY="sk_admin_compose_test", **env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target -> source of a service's volumes (docker-compose v1 prints `source:target:mode`)."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        found[target] = source
    return found


def seconds(text: str) -> int:
    units = {"s": 1, "m": 60}
    return int(text[:-1]) * units[text[-1]]


def test_compose_validates_and_needs_an_admin_key() -> None:
    assert resolved()["services"]
    refused = compose_config()
    assert refused.returncode != 0
    assert "SEMANTEST_ADMIN_KEY" in refused.stderr


def test_services_and_the_commands_semantest_up_runs() -> None:
    services = resolved()["services"]
    assert set(services) == {"redis", "controller", "webhooks", "sandbox", "agent"}
    assert services["controller"]["command"] == ["python", "-m", "controller"]
    assert services["webhooks"]["command"] == ["python", "-m", "semantest.webhook_worker"]
    assert services["sandbox"]["command"][:3] == ["python", "-m", "sandbox"]
    assert services["agent"]["command"] == ["semantest-agents"]
    for name, service in services.items():
        assert service["network_mode"] == "host", name  # loopback, like `semantest up`
        assert service["read_only"] is True, name  # writable: volumes and tmpfs only
        assert "healthcheck" in service, name
        env = service.get("environment", {})
        assert all(k.startswith("SEMANTEST_") for k in env), (name, sorted(env))


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = resolved()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    data_dir = command[command.index("--dir") + 1]
    assert mounts(redis)[data_dir] == "redis"
    assert "redis" in resolved()["volumes"]


def test_the_agents_stop_period_covers_their_drain() -> None:
    for drain in ("30", "120"):
        services = resolved(SEMANTEST_DRAIN_GRACE_S=drain)["services"]
        agent = services["agent"]
        assert agent["environment"]["SEMANTEST_DRAIN_GRACE_S"] == drain
        if drain == "30":  # the default, which the stop period is written for
            assert seconds(agent["stop_grace_period"]) == int(drain) + KILL_MARGIN_S + POOL_EXIT_S


def test_ports_and_the_shared_volume_follow_the_environment() -> None:
    services = resolved(SEMANTEST_PORT="18000", SEMANTEST_REDIS_PORT="16379")["services"]
    assert services["controller"]["environment"]["SEMANTEST_PORT"] == "18000"
    assert services["agent"]["environment"]["SEMANTEST_REDIS_URL"] == "redis://127.0.0.1:16379/0"
    assert "16379" in services["redis"]["command"]
    for name in ("controller", "webhooks", "agent"):
        assert mounts(services[name])["/var/lib/semantest/data"] == "data", name
    assert services["agent"]["shm_size"]
