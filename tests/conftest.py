"""Shared fixtures: a real redis-server on a free port, a real controller over real HTTP.

Nothing of ours is mocked. Servers are session-scoped (started once); tests use fresh ids so
they do not see each other's data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from pydantic import SecretStr

from controller.app import create_app
from semantest.config import Settings
from semantest.stack import free_port, redis_server_argv

ADMIN_KEY = "sk_test_" + "k" * 24

#: tests/containers runs the built images with a Docker engine: its own suite, `make
#: test-containers` (which sets SEMANTEST_TEST_CONTAINERS=1). `make test` needs no engine, so it
#: does not collect that folder at all (rather than skipping it).
collect_ignore = [] if os.environ.get("SEMANTEST_TEST_CONTAINERS") == "1" else ["containers"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for this test session."""
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed: run `make setup`"
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        redis_server_argv(server, port, workdir, persist=False), stdout=subprocess.DEVNULL
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.02)
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def api_settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the in-process controller used by integration tests."""
    return Settings(
        redis_url=redis_url,
        admin_key=SecretStr(ADMIN_KEY),
        port=free_port(),
        data_dir=tmp_path_factory.mktemp("data"),
        chromium=None,
    )


@contextlib.contextmanager
def serve_app(app: Any, port: int, name: str = "app") -> Iterator[str]:
    """A real uvicorn serving the ASGI `app` on a loopback `port`, in a thread."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, f"{name} did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def serve_controller(settings: Settings) -> Iterator[str]:
    """A real uvicorn serving a controller for `settings` on its port, in a thread."""
    with serve_app(create_app(settings), settings.port, "controller"):
        yield settings.controller_url


@pytest.fixture(scope="session")
def controller_url(api_settings: Settings) -> Iterator[str]:
    """A real uvicorn serving the controller on a free loopback port."""
    with serve_controller(api_settings) as url:
        yield url


@pytest.fixture
def client(controller_url: str) -> Iterator[httpx.Client]:
    """An HTTP client with the admin key."""
    with httpx.Client(
        base_url=controller_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    ) as c:
        yield c


@pytest.fixture
def anon(controller_url: str) -> Iterator[httpx.Client]:
    """An HTTP client without credentials."""
    with httpx.Client(base_url=controller_url, timeout=10) as c:
        yield c


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder."""
    return Path(__file__).resolve().parents[1]
