"""A real webhook receiver for tests: an HTTP server on a free loopback port that records every
request and answers as planned (fail a few times, redirect, be slow), and the webhook worker
as a real child process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook

from semantest.config import Settings
from semantest.stack import free_port


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def verified(self, secret: str) -> dict[str, Any]:
        """The payload, after `standardwebhooks` checked its signature (raises otherwise)."""
        payload: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return payload


@dataclass
class Plan:
    """How the receiver answers one request: status, headers, and a delay before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class Receiver:
    """Records POSTs; answers each path's planned answers in order, then 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.plans: dict[str, list[Plan]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    plans = receiver.plans.get(self.path) or []
                    plan = plans.pop(0) if plans else Plan()
                    receiver.received.append(
                        Received(self.path, dict(self.headers.items()), body, time.time())
                    )
                time.sleep(plan.delay_s)
                try:
                    self.send_response(plan.status)
                    for name, value in plan.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up waiting (a planned slow answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, *plans: Plan) -> None:
        with self._lock:
            self.plans.setdefault(path, []).extend(plans)

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def wait(self, path: str, count: int, timeout: float = 30.0) -> list[Received]:
        """The first `count` requests to `path`, waiting for them at most `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{path}: {len(self.at(path))} requests, not {count}, in {timeout} s")

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def event_types(requests: list[Received]) -> list[str]:
    return [json.loads(r.body)["type"] for r in requests]


@contextmanager
def webhook_worker(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m semantest.webhook_worker` for `settings`, as `semantest up` starts it."""
    env = dict(os.environ)
    for name, value in settings:
        if value is None or name not in _WORKER_SETTINGS:
            continue
        text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        env[f"SEMANTEST_{name.upper()}"] = text if isinstance(text, str) else json.dumps(text)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "semantest.webhook_worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(15)


_WORKER_SETTINGS = {
    "redis_url",
    "webhook_secret",
    "webhook_allow_private",
    "webhook_allow_networks",
    "webhook_max_attempts",
    "webhook_backoff_s",
    "webhook_timeout_s",
    "public_url",
    "port",
}
