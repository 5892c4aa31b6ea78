"""The audit log: who did what, when, and how it ended, for every authenticated write.

`AuditTrail` is pure ASGI middleware. After a write (any method but GET/HEAD/OPTIONS) by an
authenticated caller it appends one entry: time, tenant, key id (the key's visible prefix,
never the key), client IP, request id, method, route template, the ids the request named
(path parameters, and the ids a submission created, which routes add with `audit_targets`),
the HTTP status and, for a refusal, the error code. Failed writes (401 excepted: no caller)
are recorded too: "who tried" matters as much as "who did".

Entries go to a Redis stream (`semantest:audit`, trimmed to `SEMANTEST_AUDIT_RETENTION_DAYS`)
that `GET /api/v1/admin/audit` reads, and as JSON lines to `<data>/logs/audit.jsonl` through a
queue-backed logging handler (a thread writes the file, never the event loop).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from semantest import keys

log = logging.getLogger(__name__)

#: Methods that change nothing and are not audited.
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Path parameters that name what a request acted on.
_TARGETS = ("job_id", "batch_id", "chat_id", "prefix", "tenant", "addon_id", "version")


def audit_targets(request: Request, **ids: str | list[str]) -> None:
    """Name what a request created (e.g. `jobIds`), for its audit entry."""
    request.scope.setdefault("state", {}).setdefault("audit_targets", {}).update(ids)


class AuditSink:
    """Where entries go: the Redis stream and the JSON lines file."""

    def __init__(self, redis: Redis, path: Path, retention_days: int) -> None:
        self.redis = redis
        self.retention_s = retention_days * 86400
        path.parent.mkdir(parents=True, exist_ok=True)
        self._records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._listener = logging.handlers.QueueListener(self._records, handler)
        self._file = logging.getLogger(f"semantest.audit.{id(self)}")
        self._file.propagate = False
        self._file.setLevel(logging.INFO)
        self._file.addHandler(logging.handlers.QueueHandler(self._records))
        self._listener.start()

    async def append(self, entry: dict[str, Any]) -> None:
        """Record one entry in both places (a Redis outage loses the stream copy, not the file)."""
        line = json.dumps(entry, separators=(",", ":"))
        self._file.info(line)
        min_id = f"{int((time.time() - self.retention_s) * 1000)}-0"
        try:
            await self.redis.xadd(keys.AUDIT, {"entry": line}, minid=min_id, approximate=True)
        except (RedisError, OSError) as exc:
            log.warning("audit entry not written to Redis (%r); it is in audit.jsonl", exc)

    def close(self) -> None:
        """Flush the file and stop its writer thread."""
        self._listener.stop()


class AuditTrail:
    """ASGI middleware appending an audit entry after each authenticated write."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READS:
            await self.app(scope, receive, send)
            return
        status: list[int] = []
        error: list[str] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body" and status and status[0] >= 400:
                body = message.get("body", b"")
                if body and not error:
                    error.append(_error_code(body))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            await self._record(scope, status[0] if status else 500, error[0] if error else None)

    async def _record(self, scope: Scope, status: int, error: str | None) -> None:
        state = scope.get("state", {})
        caller = state.get("caller")
        sink: AuditSink | None = getattr(scope["app"].state, "audit", None)
        if caller is None or sink is None:
            return  # anonymous (401) or the app is not started
        params = scope.get("path_params", {})
        targets: dict[str, Any] = {k: v for k, v in params.items() if k in _TARGETS}
        targets.update(state.get("audit_targets", {}))
        client = scope.get("client")
        entry = {
            "at": time.time(),
            "tenant": caller.tenant,
            "keyId": caller.key_id,
            "ip": client[0] if client else None,
            "requestId": state.get("request_id"),
            "method": scope["method"],
            "route": _template(scope),
            "targets": targets,
            "status": status,
            "outcome": "ok" if status < 400 else "refused" if status < 500 else "error",
            "error": error,
        }
        await sink.append(entry)


def _template(scope: Scope) -> str:
    """The route's path template with its mount prefix (`/api/v1/jobs/{job_id}/cancel`).

    The matched route knows only its own part; the prefix is what precedes it in the path.
    """
    path: str = scope["path"]
    route = getattr(scope.get("route"), "path", None)
    if route is None:
        return path
    prefix = path.split("/")[: len(path.split("/")) - len(str(route).split("/")) + 1]
    return "/".join(prefix) + str(route)


def _error_code(body: bytes) -> str:
    try:
        code = json.loads(body)["error"]["code"]
        return str(code)
    except (ValueError, KeyError, TypeError):
        return "UNKNOWN"
