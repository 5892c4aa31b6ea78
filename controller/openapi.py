"""What `/openapi.json` says about errors: every route lists the statuses it can answer.

`responses(404, 409)` gives a route's `responses=` the error envelope schema with an example
for each status, so clients (and schemathesis in the suite) see every answer a route can give.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

#: The error code each HTTP status answers with, and an example message.
_EXAMPLES: dict[int, tuple[str, str]] = {
    400: ("VALIDATION_ERROR", "the body is not valid JSON"),
    401: ("UNAUTHORIZED", "missing API key: send 'Authorization: Bearer <key>'"),
    403: ("FORBIDDEN", "this key lacks the scope jobs:write"),
    404: ("JOB_NOT_FOUND", "no job '0123abcd'"),
    409: ("CONFLICT", "job 0123abcd is already succeeded"),
    413: ("PAYLOAD_TOO_LARGE", "request body over 1048576 bytes"),
    422: ("VALIDATION_ERROR", "invalid request: prompt"),
    429: ("RATE_LIMITED", "too many requests; retry in 2 s"),
    503: ("UNAVAILABLE", "the normal lane is full (10000 jobs); retry in 5 s"),
}


class ErrorDetail(BaseModel):
    """What the error is about: usually a field and the reason."""

    field: str | None = None
    reason: str | None = None


class ErrorBody(BaseModel):
    """The error itself."""

    code: str = Field(description="Stable machine-readable code, e.g. `VALIDATION_ERROR`.")
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)
    requestId: str | None = Field(default=None, description="Echoes `X-Request-ID`.")


class ErrorEnvelope(BaseModel):
    """Every error response: `{"error": {code, message, details, requestId}}`."""

    error: ErrorBody


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can answer with these error statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        code, message = _EXAMPLES[status]
        out[status] = {
            "model": ErrorEnvelope,
            "description": code,
            "content": {
                "application/json": {
                    "example": {
                        "error": {
                            "code": code,
                            "message": message,
                            "details": [],
                            "requestId": "9f1c2d3e4b5a",
                        }
                    }
                }
            },
        }
    return out
