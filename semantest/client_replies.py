"""How the SDK reads the controller's replies, shared by `Client` and `AsyncClient`.

`parse` reads a reply into one of our models (ignoring fields a newer controller added),
`error_from` turns an error envelope into the `semantest.errors` class of its code, and
`RetryPolicy` decides when a call is sent again and after how long.

Imports httpx, pydantic and the kernel's errors; never rich or typer (the CLI's).
"""

from __future__ import annotations

import email.utils
import hashlib
import math
import time
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, Union

import httpx
from pydantic import BaseModel

from semantest import errors

if TYPE_CHECKING:
    from semantest.client_calls import Call

M = TypeVar("M", bound=BaseModel)


class ConnectionFailed(errors.SemantestError):
    """The controller could not be reached (refused, timed out, connection dropped).

    Raised by the client only, never sent by a server; `__cause__` is httpx's exception.
    """

    code = "CONNECTION_FAILED"


class ApiError(errors.SemantestError):
    """An error envelope whose code this client does not know (e.g. from a newer controller)."""

    def __init__(
        self, message: str, details: list[dict[str, Any]], *, error_code: str, http_status: int
    ) -> None:
        super().__init__(message, details)
        self.error_code = error_code
        self.http_status = http_status


class ImageMismatch(errors.SemantestError):
    """Downloaded bytes do not match the sha256 in the job record."""

    code = "IMAGE_MISMATCH"


def parse(model: type[M], response: httpx.Response) -> M:
    """The reply as `model`, ignoring fields this client does not know (a newer controller
    may add some; our models forbid unknown fields to catch mistakes on the server side)."""
    return model.model_validate(known_fields(model, response.json()))


def known_fields(model: type[BaseModel], data: Any) -> Any:
    """`data` without the keys `model` (and the models inside it) does not declare."""
    if not isinstance(data, dict):
        return data
    kept: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        for key in (info.alias, name):
            if key is not None and key in data:
                kept[key] = _known_in(info.annotation, data[key])
                break
    return kept


def _known_in(annotation: Any, value: Any) -> Any:
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return known_fields(annotation, value)
    if origin in (list, tuple) and isinstance(value, list):
        (inner, *_rest) = typing.get_args(annotation) or (Any,)
        return [_known_in(inner, v) for v in value]
    if origin in (Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if _is_model(a)]
        if len(models) == 1 and isinstance(value, dict):
            return known_fields(models[0], value)
    return value


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _error_classes() -> dict[str, type[errors.SemantestError]]:
    found: dict[str, type[errors.SemantestError]] = {}
    pending: list[type[errors.SemantestError]] = [errors.SemantestError]
    while pending:
        cls = pending.pop()
        # Only the classes the server raises: a job's own error is never an HTTP reply.
        if cls.__module__ == errors.__name__ and not issubclass(cls, errors.JobFailure):
            found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


#: Error code → the class `errors.py` declares for it.
ERROR_CLASSES: dict[str, type[errors.SemantestError]] = _error_classes()
#: HTTP status → the most general code of that status, for a reply without an envelope
#: (e.g. from a proxy in front of the controller).
STATUS_CODES: dict[int, str] = {
    cls.status: code
    for code, cls in ERROR_CLASSES.items()
    if cls.status != getattr(cls.__mro__[1], "status", None)
}


def error_from(response: httpx.Response) -> errors.SemantestError:
    """The exception for an error reply: the class of its envelope's `code`, with the
    message, `details` and, for 429/503, `retry_after_s`; the request id is in a note."""
    try:
        envelope = response.json()["error"]
        code = str(envelope["code"])
        message = str(envelope.get("message") or code)
        details = list(envelope.get("details") or [])
        request_id = envelope.get("requestId")
    except (ValueError, KeyError, TypeError):
        code = STATUS_CODES.get(response.status_code, "")
        message = f"HTTP {response.status_code}: {response.text[:200] or response.reason_phrase}"
        details, request_id = [], response.headers.get("x-request-id")
    cls = ERROR_CLASSES.get(code)
    exc: errors.SemantestError
    if cls is not None and issubclass(cls, errors.RateLimited | errors.Unavailable):
        wait = retry_after(response)
        exc = cls(message, retry_after_s=1 if wait is None else math.ceil(wait), details=details)
    elif cls is not None and cls is not errors.SemantestError:
        exc = cls(message, details)
    else:
        exc = ApiError(
            message, details, error_code=code or "HTTP_ERROR", http_status=response.status_code
        )
    if request_id:
        exc.add_note(f"request id: {request_id}")
    return exc


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks us to wait (`Retry-After`: seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# --- retries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """When a call is sent again, and after how long.

    - 429 RATE_LIMITED and 503 UNAVAILABLE: the server did not act on the request, so every
      call is retried, after `Retry-After` (or back-off when it names no wait), at most
      `retries` times, and never when the server asks for longer than `max_wait_s`.
    - The connection could not be made: the request never left, so any call is retried.
    - The connection dropped mid-request: only `Call.replayable` calls are retried.
    """

    retries: int = 3
    max_wait_s: float = 60.0
    #: First wait after a 429/503 that names none; doubles each time.
    backoff_s: float = 0.5
    #: First wait after a connection error; doubles each time. Short: a dropped keep-alive
    #: connection is cured by the next one at once, and a refused one should be reported soon.
    reconnect_s: float = 0.1

    #: httpx errors raised before the request reached the server.
    NOT_SENT: ClassVar[tuple[type[httpx.TransportError], ...]] = (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
    )

    def after_reply(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up."""
        if response.status_code not in (429, 503) or attempt >= self.retries:
            return None
        wait = retry_after(response)
        if wait is None:
            wait = self.backoff_s * 2.0**attempt
        return wait if wait <= self.max_wait_s else None

    def after_transport_error(
        self, call: Call, exc: httpx.TransportError, attempt: int
    ) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up."""
        if attempt >= self.retries:
            return None
        if not (call.replayable or isinstance(exc, self.NOT_SENT)):
            return None
        return self.reconnect_s * 2.0**attempt


def connection_failed(base_url: httpx.URL, exc: httpx.TransportError) -> ConnectionFailed:
    """What the clients raise when the controller stayed unreachable."""
    return ConnectionFailed(
        f"cannot reach the controller at {base_url} ({type(exc).__name__}: {exc or 'no detail'})"
    )


def check_image(data: bytes, sha256: str | None) -> bytes:
    """`data`, after checking it against the record's sha256 when there is one."""
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ImageMismatch(f"downloaded image does not match its sha256 {sha256}")
    return data
