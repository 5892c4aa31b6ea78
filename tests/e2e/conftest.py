"""End-to-end fixtures, in layers that can be used apart.

- The browser side comes from our own pytest plugin, `semantest.testing` (extension_context,
  service_worker, addon_server, addon_page, bridge, ...): here it only gets its Redis database
  and pytest-playwright's plain browser gets the system Chromium.
- `sandbox_url`: the sandbox provider alone, in a thread (no controller, no agent), with
  `sandbox_faults` emptying its fault queue around each test.
- `stack`: the whole deployment as child processes (controller, sandbox, one agent with real
  Chromium), with `api` (a client) and `faults` (its sandbox's fault queue, emptied around
  each test).

Every test that uses the shared stack or the shared sandbox starts with an empty fault queue.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from semantest import keys
from semantest.config import CHROMIUM_ARGS, Settings
from semantest.stack import Stack, free_port
from tests.conftest import ADMIN_KEY, serve_app

#: The Redis database of the plugin's addon server in this suite.
ADDON_SERVER_DB = 57


def stack_settings(redis_url: str, db: int, data_dir: Path, **overrides: Any) -> Settings:
    """Settings of a test stack on its own Redis database, free ports and its own data dir.

    Its own database keeps its agents from taking jobs queued by other tests.
    """
    values: dict[str, Any] = {
        "redis_url": f"{redis_url.rsplit('/', 1)[0]}/{db}",
        "admin_key": SecretStr(ADMIN_KEY),
        "port": free_port(),
        "sandbox_port": free_port(),
        "data_dir": data_dir,
        "sandbox_latency_ms": 0,
        "retry_backoff_s": [1],
        # No canary jobs unless a test asks: one would take the next injected fault.
        "canary_interval_s": 0,
    }
    settings = Settings(**(values | overrides))
    assert settings.chromium, "Chromium is not installed: run `make setup`"
    return settings


# -- the plugin's fixtures, fitted to this suite ----------------------------------------------


@pytest.fixture(scope="session")
def addon_server_redis_url(redis_url: str) -> str:
    """The plugin's addon server uses the session's redis-server, on its own database."""
    return f"{redis_url.rsplit('/', 1)[0]}/{ADDON_SERVER_DB}"


@pytest.fixture(scope="session")
def browser_type_launch_args(
    browser_type_launch_args: dict[str, Any], chromium_executable: str | None
) -> dict[str, Any]:
    """pytest-playwright's own browser (`page`, `context`) runs the system Chromium too."""
    assert chromium_executable, "Chromium is not installed: run `make setup`"
    return browser_type_launch_args | {
        "executable_path": chromium_executable,
        "args": list(CHROMIUM_ARGS),
    }


# -- the sandbox provider alone ---------------------------------------------------------------


@dataclass
class Faults:
    """The fault queue of one sandbox: what its next replies fail with."""

    sandbox_url: str

    def inject(self, kind: str, count: int = 1) -> None:
        reply = httpx.post(
            f"{self.sandbox_url}/_sandbox/faults", json={"kind": kind, "count": count}
        )
        assert reply.status_code == 200, reply.text

    def pending(self) -> list[str]:
        pending: list[str] = httpx.get(f"{self.sandbox_url}/_sandbox/faults").json()["pending"]
        return pending

    def clear(self) -> None:
        reply = httpx.delete(f"{self.sandbox_url}/_sandbox/faults")
        assert reply.status_code == 200, reply.text


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    """The sandbox provider (chat page, NDJSON stream, PNGs) in a thread, without latency."""
    from sandbox.app import create_app

    with serve_app(create_app(latency_ms=0), free_port(), "sandbox") as url:
        yield url


@pytest.fixture
def sandbox_faults(sandbox_url: str) -> Iterator[Faults]:
    """`sandbox_url`'s fault queue, empty when the test starts and emptied after it."""
    faults = Faults(sandbox_url)
    faults.clear()
    yield faults
    faults.clear()


# -- the whole stack ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Controller + sandbox + 1 agent on the session's redis-server (database 1)."""
    settings = stack_settings(redis_url, 1, tmp_path_factory.mktemp("stack"))
    with Stack(settings, agents=1) as running:
        yield running


@pytest.fixture(autouse=True)
def _empty_fault_queues(request: pytest.FixtureRequest) -> None:
    """Every test on the shared stack or the shared sandbox starts with no fault pending, even
    when an earlier test injected one it never consumed."""
    if "stack" in request.fixturenames:
        Faults(request.getfixturevalue("stack").settings.sandbox_url).clear()
    if "sandbox_url" in request.fixturenames:
        Faults(request.getfixturevalue("sandbox_url")).clear()


@pytest.fixture
def faults(stack: Stack) -> Iterator[Faults]:
    """The stack's sandbox fault queue, empty when the test starts and emptied after it, so a
    fault a test left unserved never fails the next test's job."""
    queue = Faults(stack.settings.sandbox_url)
    queue.clear()
    yield queue
    queue.clear()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    """A client of the stack's controller with the admin key."""
    with httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    ) as c:
        yield c


def client(stack: Stack) -> httpx.Client:
    """A client of `stack`'s controller with the admin key (close it, or use `with`)."""
    return httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    )


def submit(api: httpx.Client, prompt: str) -> str:
    """Submit one prompt to the sandbox provider; the new job's id."""
    reply = api.post("/api/v1/images/generate", json={"prompt": prompt})
    assert reply.status_code == 202, reply.text
    job_id: str = reply.json()["jobId"]
    return job_id


def run_job(api: httpx.Client, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Submit one generate request and wait until its job is final; the final record."""
    accepted = api.post("/api/v1/images/generate", json=body)
    assert accepted.status_code == 202, accepted.text
    return wait_final(api, accepted.json()["jobId"], timeout)


def served_sha256s(api: httpx.Client, record: dict[str, Any]) -> list[str]:
    """sha256 of the bytes the controller serves for each image of the record (each checked
    against the record's own sha256)."""
    out = []
    for image in record["images"]:
        data = api.get(image["url"], follow_redirects=True).content
        assert hashlib.sha256(data).hexdigest() == image["sha256"]
        out.append(image["sha256"])
    return out


def job_events(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    """The job's event stream, oldest first."""
    r = redis.Redis.from_url(stack.settings.redis_url or "")
    try:
        return [json.loads(f[b"event"]) for _i, f in r.xrange(keys.job_events(job_id))]
    finally:
        r.close()


def wait_final(api: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record: dict[str, Any] = api.get(f"/api/v1/images/status/{job_id}").json()
        if not seen or seen[-1] != record["status"]:
            seen.append(record["status"])
        if record["status"] in ("succeeded", "failed", "canceled"):
            record["_seen"] = seen
            return record
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not final after {timeout}s; statuses seen: {seen}")
