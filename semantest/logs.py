"""Logging set-up shared by every process: JSON lines on stdout, with the ids of the moment.

Every record is one JSON object on one line (python-json-logger): `time`, `level`, `role`
(controller, agent, pool, webhooks), `logger`, `message`, and the context the record was
logged in: `request_id` (an HTTP request of the controller), `job_id`, `agent` and `slot`
(where one exists). Context comes from `contextvars` set with `bind()`, so a helper deep in
the call stack logs the job it works for without being handed its id; asyncio tasks inherit
it, and so does a coroutine a slot thread hands to the agent's loop
(`run_coroutine_threadsafe` copies the caller's context). `grep <job id>` over the logs of
every process follows one job from its submission to its stored image.

Secrets never reach a line: `Redact` masks API keys (`sk_…`, keeping the prefix the admin API
shows), webhook secrets (`whsec_…`), bearer credentials and JWTs in the message and in every
string field, whatever the caller passed.

`SEMANTEST_LOG_FORMAT=text` gives the older one-line text format (a terminal during
development). Must not import anything of ours but the kernel.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

from pythonjsonlogger.json import JsonFormatter

#: The context fields, in the order they appear on a line.
CONTEXT_FIELDS = ("request_id", "job_id", "agent", "slot")

_context: dict[str, contextvars.ContextVar[Any]] = {
    name: contextvars.ContextVar(f"semantest_log_{name}", default=None) for name in CONTEXT_FIELDS
}

#: What `Redact` masks: an API key after its visible prefix, webhook secrets, bearer
#: credentials and JWTs (three base64url parts, the first a JSON header: `eyJ`).
_SECRETS = (
    (re.compile(r"\b(sk_[A-Za-z0-9_-]{8})[A-Za-z0-9_-]{4,}"), r"\1…"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"), "whsec_…"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "<jwt>"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1<redacted>"),
)


#: Text without any of these holds nothing `_SECRETS` would mask (a cheap test first: most
#: lines have none, and the patterns cost more than the rest of formatting a line).
_MARKERS = ("sk_", "whsec_", "eyJ", "earer", "EARER")


def redact(text: str) -> str:
    """`text` with every key, secret and token masked."""
    if not any(marker in text for marker in _MARKERS):
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def bind(**fields: Any) -> None:
    """Set context fields (`request_id`, `job_id`, `agent`, `slot`) for what runs from here on
    in this context (this task, this thread)."""
    for name, value in fields.items():
        _context[name].set(value)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Context fields for the duration of a `with` block, restored after it."""
    tokens = [(_context[name], _context[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current(name: str) -> Any:
    """The value of one context field here (None when unset)."""
    return _context[name].get()


class ContextFields(logging.Filter):
    """Adds the context fields and the process's role to every record (an explicit `extra`
    wins over the context)."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        for name, var in _context.items():
            value = var.get()
            if value is not None and getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class Redact(logging.Filter):
    """Masks secrets in the formatted message and in string `extra` fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        fields = vars(record)
        for name in fields.keys() - _STANDARD:
            value = fields[name]
            if isinstance(value, str):
                fields[name] = redact(value)
        return True


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonLines(JsonFormatter):
    """One JSON object per record; exceptions as a `exc_info` string, secrets masked."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(role)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
            json_ensure_ascii=False,
        )

    def formatException(self, ei: Any) -> str | list[str]:  # type: ignore[override]
        formatted = super().formatException(ei)
        if isinstance(formatted, str):
            return redact(formatted)
        return [redact(line) for line in formatted]


def configure_logging(level: str = "INFO", role: str = "semantest", fmt: str = "json") -> None:
    """Send every record of this process to stdout: JSON lines (`fmt="json"`) or text."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(ContextFields(role))
    handler.addFilter(Redact())
    if fmt == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {role} %(name)s: %(message)s")
        )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
