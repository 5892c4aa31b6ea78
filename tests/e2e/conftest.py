"""The whole stack as child processes: controller, sandbox, one agent with real Chromium."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from semantest import keys
from semantest.config import Settings
from semantest.stack import Stack, free_port
from tests.conftest import ADMIN_KEY


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
    }
    settings = Settings(**(values | overrides))
    assert settings.chromium, "Chromium is not installed: run `make setup`"
    return settings


@pytest.fixture(scope="session")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Controller + sandbox + 1 agent on the session's redis-server (database 1)."""
    settings = stack_settings(redis_url, 1, tmp_path_factory.mktemp("stack"))
    with Stack(settings, agents=1) as running:
        yield running


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
