"""The whole stack as child processes: controller, sandbox, one agent with real Chromium."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from semantest.config import Settings
from semantest.stack import Stack, free_port
from tests.conftest import ADMIN_KEY


@pytest.fixture(scope="session")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Controller + sandbox + 1 agent on the session's redis-server.

    The stack gets its own Redis database so its agent never takes jobs queued by the API tests.
    """
    settings = Settings(
        redis_url=redis_url.rsplit("/", 1)[0] + "/1",
        admin_key=SecretStr(ADMIN_KEY),
        port=free_port(),
        sandbox_port=free_port(),
        data_dir=tmp_path_factory.mktemp("stack"),
        sandbox_latency_ms=0,
        retry_backoff_s=[1],
    )
    assert settings.chromium, "Chromium is not installed: run `make setup`"
    with Stack(settings, agents=1) as running:
        yield running


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    """A client of the stack's controller with the admin key."""
    with httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    ) as c:
        yield c


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
