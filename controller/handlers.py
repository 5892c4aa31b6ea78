"""Exception handlers: every error leaves the controller in the one error envelope.

`SemantestError` subclasses carry their own code and status; FastAPI's request validation
errors become `VALIDATION_ERROR` with one detail per field; anything unexpected becomes a 500
envelope without internals (the traceback goes to the log, with the request id).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from semantest.errors import NotFound, SemantestError, ValidationError

log = logging.getLogger(__name__)


def request_id(request: Request) -> str | None:
    """The id the request-id middleware gave this request."""
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """`("body", "options", "count")` → `"options.count"`; the whole body → `"body"`."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or (str(loc[0]) if loc else "body")


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
    details = [{"field": field_name(e["loc"]), "reason": e["msg"]} for e in exc.errors()]
    fields = ", ".join(dict.fromkeys(d["field"] for d in details))
    return error_response(ValidationError(f"invalid request: {fields}", details), request)


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFound(f"no route {request.method} {request.url.path}"), request)
    code = "METHOD_NOT_ALLOWED" if exc.status_code == 405 else "HTTP_ERROR"
    body: dict[str, Any] = {
        "error": {
            "code": code,
            "message": str(exc.detail),
            "details": [],
            "requestId": request_id(request),
        }
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error (request %s)", request_id(request))
    return error_response(SemantestError("internal error"), request)


def install(app: FastAPI) -> None:
    """Register every handler on the app."""
    app.add_exception_handler(SemantestError, on_semantest_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
