"""The whole stack as child processes: controller, sandbox, one agent with real Chromium."""

from __future__ import annotations

from collections.abc import Iterator

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
