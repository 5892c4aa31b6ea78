"""Container health checks that ask the real process: `semantest-healthcheck ROLE`.

Installed in both images as `/usr/local/bin/semantest-healthcheck` (Docker `HEALTHCHECK`,
compose `healthcheck`, Kubernetes exec probes). Settings come from the same `SEMANTEST_*`
variables the process itself reads. Exit 0 = healthy, 1 = not, with one line saying why.

- `controller`: `GET /api/v1/health` on the controller's own port answers 200 (Redis reachable,
  storage writable). Readiness.
- `controller-live`: `GET /api/v1/pressure` answers 200; it does so even while Redis is down, so
  a Redis failover does not get every controller restarted. Liveness.
- `sandbox`: `GET /health` on the sandbox provider.
- `agent`: some agent of this container (id `<prefix>-<n>`, see `agent_prefix`) published a
  heartbeat within `keys.AGENT_TTL_S`: the agent loop, its browser and Redis all work. Readiness.
- `agent-live`: the same, except that an unreachable Redis passes (restarting agents would not
  bring Redis back, and they ride an outage out on their own). Liveness.
- `webhooks`: the webhook worker of this container is registered in Redis by RQ and its process
  is alive.

`semantest-healthcheck --agent-prefix` prints the prefix this container's agents are named with
(`docker/semantest-agents` names them so): one implementation for the names and their check.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable

import httpx
import redis

from semantest import keys
from semantest.config import Settings, get_settings

TIMEOUT_S = 3.0


class Unhealthy(Exception):
    """The check failed; the message says why."""


def _loopback(host: str) -> str:
    """Where to reach a server bound to `host` from inside its own container."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _get(url: str) -> str:
    try:
        answer = httpx.get(url, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise Unhealthy(f"{url}: {type(exc).__name__}: {exc}") from None
    if answer.status_code != 200:
        raise Unhealthy(f"{url} answered {answer.status_code}: {answer.text[:200]}")
    return f"{url} answered 200"


def controller(settings: Settings) -> str:
    """Readiness of the controller: its own /api/v1/health."""
    return _get(f"http://{_loopback(settings.host)}:{settings.port}/api/v1/health")


def controller_live(settings: Settings) -> str:
    """Liveness of the controller: /api/v1/pressure, which answers 200 even without Redis."""
    return _get(f"http://{_loopback(settings.host)}:{settings.port}/api/v1/pressure")


def sandbox(settings: Settings) -> str:
    """The sandbox provider's /health."""
    return _get(f"http://{_loopback(settings.sandbox_host)}:{settings.sandbox_port}/health")


def _redis(settings: Settings) -> redis.Redis:
    if not settings.redis_url:
        raise Unhealthy("SEMANTEST_REDIS_URL is not set")
    return redis.Redis.from_url(
        settings.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
    )


#: Docker bind-mounts /etc/hostname from its container directory, named by the container id.
_DOCKER_ID = re.compile(r"/containers/([0-9a-f]{64})/hostname ")


def agent_prefix() -> str:
    """What this container's agents are named after: SEMANTEST_AGENT_PREFIX, else the Docker
    container id (12 characters, as `docker ps` shows it), else the host name (the pod's name in
    Kubernetes). Containers on the host's network share its host name, hence the container id.
    """
    if os.environ.get("SEMANTEST_AGENT_PREFIX"):
        return os.environ["SEMANTEST_AGENT_PREFIX"]
    try:
        found = _DOCKER_ID.search(open("/proc/self/mountinfo").read())  # noqa: SIM115
    except OSError:
        found = None
    return found.group(1)[:12] if found else socket.gethostname()


def _own_heartbeats(client: redis.Redis, prefix: str) -> list[dict[str, object]]:
    ids = [
        m.decode()
        for m in client.zrangebyscore(keys.AGENTS, time.time() - keys.AGENT_TTL_S, "+inf")
    ]
    raws = client.mget([keys.agent(i) for i in ids]) if ids else []
    beats = [json.loads(raw) for raw in raws if raw is not None]
    return [b for b in beats if str(b.get("id", "")).startswith(f"{prefix}-")]


def agent(settings: Settings, *, redis_down_is_fine: bool = False) -> str:
    """A fresh heartbeat from an agent of this container."""
    prefix = agent_prefix()
    client = _redis(settings)
    try:
        beats = _own_heartbeats(client, prefix)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if redis_down_is_fine:
            return f"Redis unreachable ({type(exc).__name__}); not judging the agent on that"
        raise Unhealthy(f"Redis unreachable: {type(exc).__name__}: {exc}") from None
    finally:
        client.close()
    fresh = [b for b in beats if time.time() - float(str(b.get("beatAt", 0))) <= keys.AGENT_TTL_S]
    if not fresh:
        raise Unhealthy(f"no agent {prefix}-<n> sent a heartbeat in {keys.AGENT_TTL_S} s")
    names = ", ".join(f"{b['id']} ({b.get('state')})" for b in fresh)
    return f"heartbeat from {names}"


def webhooks(settings: Settings) -> str:
    """The webhook worker of this container: registered by RQ, and its process alive."""
    from rq import Worker

    host = socket.gethostname()
    client = _redis(settings)
    try:
        workers = [w for w in Worker.all(connection=client) if w.name.startswith("webhooks@")]
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Unhealthy(f"Redis unreachable: {type(exc).__name__}: {exc}") from None
    finally:
        client.close()
    for worker in workers:
        # the worker names itself webhooks@<host>.<pid> (semantest/webhook_worker.py)
        where, _, pid = worker.name.removeprefix("webhooks@").rpartition(".")
        if where == host and pid.isdigit() and _alive(int(pid)):
            return f"{worker.name} is registered and running ({worker.get_state()})"
    raise Unhealthy(f"no live webhook worker of host {host} is registered in Redis")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


CHECKS: dict[str, Callable[[Settings], str]] = {
    "controller": controller,
    "controller-live": controller_live,
    "sandbox": sandbox,
    "agent": agent,
    "agent-live": lambda s: agent(s, redis_down_is_fine=True),
    "webhooks": webhooks,
}


def main(argv: list[str]) -> int:
    """Run the check named by argv[1]; print one line; 0 when healthy."""
    if argv[1:] == ["--agent-prefix"]:
        print(agent_prefix())
        return 0
    if len(argv) != 2 or argv[1] not in CHECKS:
        print(f"usage: semantest-healthcheck {{{','.join(CHECKS)}}}", file=sys.stderr)
        return 2
    try:
        print(f"{argv[1]}: {CHECKS[argv[1]](get_settings())}")
    except Unhealthy as exc:
        print(f"{argv[1]}: unhealthy: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
