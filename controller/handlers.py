"""Exception handlers: every error leaves the controller in the one error envelope.

`SemantestError` subclasses carry their own code and status; FastAPI's request validation
errors become `VALIDATION_ERROR` with one detail per field (a body that is not JSON, or not
sent as JSON, is the field `body`); Starlette's `HTTPException`s (no route, wrong method, a body
FastAPI could not read) are mapped to a code of the contract; anything unexpected becomes a 500
envelope without internals (the traceback goes to the log, with the request id).

Must not import `controller.openapi` (it documents what this module answers).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from semantest.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SemantestError,
    Unauthorized,
    Unavailable,
    ValidationError,
)

log = logging.getLogger(__name__)


class MethodNotAllowed(SemantestError):
    """The path exists but not with this method; the answer's `Allow` lists the ones it takes.

    Lives here, not in `semantest.errors`: only HTTP routing can raise it.
    """

    code = "METHOD_NOT_ALLOWED"
    status = 405


#: What a Starlette/FastAPI `HTTPException` answers, by its status. Any other 4xx is a
#: validation error (422) and any other status an internal error (500): never a code outside the
#: contract.
_BY_STATUS: dict[int, type[SemantestError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
    503: Unavailable,
}


def request_id(request: Request) -> str | None:
    """The id the request-id middleware gave this request."""
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


_LOCATIONS = ("body", "query", "path", "header", "cookie")


def is_union_tag(part: Any) -> bool:
    """Whether a loc part names a union member pydantic tried, not a field.

    Wire fields are camelCase; pydantic tags members by class name (`BatchItem`) or by a
    type tag (`constrained-str`, `function-after[...]`), which a client never sent.
    """
    return isinstance(part, str) and (part[:1].isupper() or "-" in part or "[" in part)


def field_name(loc: tuple[Any, ...] | list[Any], *, sent_key: bool = False) -> str:
    """`("body", "options", "count")` → `"options.count"`; the whole body → `"body"`.

    Union members pydantic tried are left out: `("body", "prompts", 2, "BatchItem", "prompt")`
    → `"prompts.2.prompt"`. With `sent_key` the last part is a key the client sent (an unknown
    field), kept whatever it looks like.
    """
    parts = list(loc)
    where = parts.pop(0) if parts and parts[0] in _LOCATIONS else None
    last = [parts.pop()] if sent_key and parts else []
    if where in (None, "body"):  # parameter names (`Idempotency-Key`) are never tags
        parts = [p for p in parts if not is_union_tag(p)]
    name = ".".join(str(p) for p in [*parts, *last])
    return name or str(where or "body")


def json_position(doc: str | bytes, pos: int) -> str:
    """`line L column C` of character `pos` in `doc` (both from 1)."""
    text = doc.decode("utf-8", "replace") if isinstance(doc, bytes) else doc
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line} column {column}"


#: pydantic's error types for "the body is JSON, but not an object".
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "model_type", "dict_type"})


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else type(value).__name__


def is_json(request: Request) -> bool:
    """Whether the request says its body is JSON (`application/json` or `application/*+json`)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def detail_of(error: dict[str, Any], body: Any, request: Request) -> dict[str, str]:
    """One pydantic/FastAPI error as `{"field", "reason"}`."""
    loc = tuple(error["loc"])
    if error["type"] == "json_invalid":
        # FastAPI puts the character offset where the field would be: say where JSON breaks.
        reason = f"not valid JSON: {error.get('ctx', {}).get('error', error['msg'])}"
        if len(loc) > 1 and isinstance(loc[1], int) and isinstance(body, str | bytes):
            reason += f" at {json_position(body, loc[1])}"
        return {"field": "body", "reason": reason}
    if loc == ("body",) and error["type"] != "missing":
        if not is_json(request):
            sent = request.headers.get("content-type") or "no Content-Type"
            reason = f"send a JSON object with Content-Type: application/json (got {sent})"
            return {"field": "body", "reason": reason}
        if error["type"] in _NOT_AN_OBJECT:
            return {"field": "body", "reason": f"expected a JSON object, got {json_type(body)}"}
    name = field_name(loc, sent_key=error["type"] == "extra_forbidden")
    return {"field": name, "reason": str(error["msg"])}


def error_response(exc: SemantestError, request: Request) -> JSONResponse:
    """The envelope response of one error."""
    return JSONResponse(
        exc.envelope(request_id(request)), status_code=exc.status, headers=exc.headers()
    )


async def on_semantest_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SemantestError)
    return error_response(exc, request)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [detail_of(e, exc.body, request) for e in exc.errors()]
    return error_response(ValidationError(message_of(details), details), request)


def message_of(details: list[dict[str, str]]) -> str:
    """The error's message: what is wrong with the body when that is all, else which fields.

    `body is not valid JSON: Expecting ',' delimiter at line 3 column 3`, `body: expected a JSON
    object, got an array`, or `invalid request: prompt, options.count`.
    """
    if [d["field"] for d in details] == ["body"]:
        reason = details[0]["reason"]
        return f"body is {reason}" if reason.startswith("not valid JSON") else f"body: {reason}"
    return "invalid request: " + ", ".join(dict.fromkeys(d["field"] for d in details))


def unreadable_body(exc: HTTPException) -> ValidationError:
    """FastAPI's 400 "error parsing the body": say why, as the field `body`."""
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        reason = f"not valid JSON: not UTF-8 text (byte {cause.start})"
    elif isinstance(cause, RecursionError):
        reason = "not valid JSON: nested too deeply"
    elif isinstance(cause, ValueError):
        reason = f"not valid JSON: {cause}"
    else:
        reason = f"could not read the body ({exc.detail})"
    details = [{"field": "body", "reason": reason}]
    return ValidationError(message_of(details), details)


def from_http_exception(exc: HTTPException, request: Request) -> SemantestError:
    """The contract's error for a Starlette/FastAPI `HTTPException`."""
    where = f"{request.method} {request.url.path}"
    cls = _BY_STATUS.get(exc.status_code)
    if cls is NotFound:
        return NotFound(f"no route {where}")
    if cls is MethodNotAllowed:
        allowed = (exc.headers or {}).get("Allow", "")
        return MethodNotAllowed(f"{where} is not allowed (allowed: {allowed})")
    if cls is not None:
        return cls(str(exc.detail))
    if exc.status_code == 400:
        return unreadable_body(exc)
    if 400 < exc.status_code < 500:
        return ValidationError(f"invalid request: {exc.detail}")
    log.error("HTTP %s from %s (request %s): %s", exc.status_code, where, request_id(request), exc)
    return SemantestError("internal error")


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    err = from_http_exception(exc, request)
    headers = {**err.headers(), **(exc.headers or {})}
    return JSONResponse(err.envelope(request_id(request)), status_code=err.status, headers=headers)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error (request %s)", request_id(request))
    return error_response(SemantestError("internal error"), request)


def install(app: FastAPI) -> None:
    """Register every handler on the app."""
    app.add_exception_handler(SemantestError, on_semantest_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
