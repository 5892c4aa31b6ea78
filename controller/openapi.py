"""What `/openapi.json` says: every route, every status it can answer, each with an example.

Two sources, so that no route can forget what its shape already implies:

- `responses(...)` and `success(...)` in a route's decorator: what only that route knows (its
  404 and which code, 304, 409, 429, 503, its success example).
  `responses(404, 409)`, `responses(JobNotFound, Conflict)` and
  `responses(404, example_code="JOB_NOT_FOUND")` all work; several codes under one status become
  named examples.
- `install(app)`: after FastAPI builds the document, every operation gets what follows from how
  its route is built: `401` and its security requirement when it depends on
  `controller.auth.authenticate` (optional for the addon GETs), `413` when it takes a body, and
  `422` as our error envelope (FastAPI's own `HTTPValidationError` is never served).

Must not import the route modules (they import this one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel, Field, JsonValue
from pydantic.json_schema import models_json_schema

from controller.auth import authenticate, authenticate_addons
from controller.handlers import MethodNotAllowed
from semantest.errors import (
    AddonNotFound,
    Conflict,
    DomainNotAllowed,
    Forbidden,
    ImageNotFound,
    JobNotFound,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SemantestError,
    Unauthorized,
    Unavailable,
    ValidationError,
)

#: Every error the HTTP API answers with, each with an example message. The first of a status
#: is that status's default code.
API_ERRORS: dict[type[SemantestError], str] = {
    ValidationError: "invalid request: prompt",
    Unauthorized: "missing API key: send 'Authorization: Bearer <key>'",
    Forbidden: "this key lacks the scope jobs:write",
    DomainNotAllowed: "https://example.com/ is outside the addon's allowlist",
    NotFound: "no route GET /api/v1/nope",
    JobNotFound: "no job '0123abcd'",
    AddonNotFound: "no addon 'midjourney'",
    ImageNotFound: "no image 'admin/0123.png'",
    MethodNotAllowed: "DELETE /api/v1/health is not allowed (allowed: GET)",
    Conflict: "job 0123abcd is already succeeded",
    PayloadTooLarge: "request body over 1048576 bytes",
    RateLimited: "too many requests; retry in 2 s",
    Unavailable: "the normal lane is full (10000 jobs); retry in 5 s",
    SemantestError: "internal error",
}
API_CODES = tuple(cls.code for cls in API_ERRORS)
_CODE_ENUM: list[JsonValue] = list(API_CODES)
_BY_CODE = {cls.code: cls for cls in API_ERRORS}
_BY_STATUS: dict[int, type[SemantestError]] = {}
for _cls in API_ERRORS:
    _BY_STATUS.setdefault(_cls.status, _cls)
#: The API answers no 400 (a body that is not JSON is a 422 like any other bad input); a route
#: that still lists 400 documents it as `VALIDATION_ERROR`.
_BY_STATUS[400] = ValidationError

ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key as bearer."},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_KEY_REQUIRED: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
REQUEST_ID_HEADER = {
    "X-Request-ID": {
        "description": "The request's id (a sane incoming `X-Request-ID` is kept).",
        "required": True,
        "schema": {"type": "string"},
    }
}
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
EXAMPLE_REQUEST_ID = "9f1c2d3e4b5a"
VALIDATION_EXAMPLES = {
    "field": ValidationError(
        "invalid request: options.count",
        [{"field": "options.count", "reason": "Input should be less than or equal to 4"}],
    ).envelope(EXAMPLE_REQUEST_ID),
    "body": ValidationError(
        "body is not valid JSON: Expecting ',' delimiter at line 1 column 18",
        [
            {
                "field": "body",
                "reason": "not valid JSON: Expecting ',' delimiter at line 1 column 18",
            }
        ],
    ).envelope(EXAMPLE_REQUEST_ID),
}


class ErrorDetail(BaseModel):
    """What the error is about: usually a field and the reason."""

    field: str | None = Field(default=None, description="`options.count`, or `body` for all of it.")
    reason: str | None = None


class ErrorBody(BaseModel):
    """The error itself."""

    code: str = Field(
        description="Stable machine-readable code.",
        json_schema_extra={"enum": _CODE_ENUM},
    )
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)
    requestId: str | None = Field(default=None, description="Echoes `X-Request-ID`.")


class ErrorEnvelope(BaseModel):
    """Every error response: `{"error": {code, message, details, requestId}}`."""

    error: ErrorBody


def error_example(cls: type[SemantestError]) -> dict[str, Any]:
    """An example envelope of one error class."""
    return cls(API_ERRORS[cls]).envelope(EXAMPLE_REQUEST_ID)


def error_response(*classes: type[SemantestError]) -> dict[str, Any]:
    """The OpenAPI response of one status answered with these error classes."""
    examples = {cls.code: error_example(cls) for cls in classes}
    if ValidationError in classes:
        examples = VALIDATION_EXAMPLES
    media: dict[str, Any] = {"schema": {"$ref": ENVELOPE_REF}}
    if len(examples) == 1:
        media["example"] = next(iter(examples.values()))
    else:
        media["examples"] = {name: {"value": value} for name, value in examples.items()}
    out: dict[str, Any] = {
        "description": " or ".join(cls.code for cls in classes),
        "content": {"application/json": media},
    }
    if classes[0].status in (RateLimited.status, Unavailable.status):
        out["headers"] = dict(RETRY_AFTER_HEADER)
    return out


def responses(
    *statuses: int | type[SemantestError], example_code: str | None = None
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can answer with these errors.

    A status answers with its default code (404 → `NOT_FOUND`), an error class with its own
    code; `example_code` names the code its status answers with instead of the default.
    """
    chosen = _BY_CODE[example_code] if example_code is not None else None
    by_status: dict[int, list[type[SemantestError]]] = {}
    for item in statuses:
        if isinstance(item, int):
            status = item
            item = chosen if chosen is not None and chosen.status == item else _BY_STATUS[item]
        else:
            status = item.status
        by_status.setdefault(status, [])
        if item not in by_status[status]:
            by_status[status].append(item)
    if chosen is not None and chosen.status not in by_status:
        by_status[chosen.status] = [chosen]
    return {status: error_response(*classes) for status, classes in sorted(by_status.items())}


def success(
    status: int,
    example: Any,
    *,
    description: str = "OK",
    media_type: str = "application/json",
    schema: dict[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a success answer with its example (merge with `|`)."""
    media: dict[str, Any] = {"example": example}
    if schema is not None:
        media["schema"] = schema
    return {status: {"description": description, "content": {media_type: media}}}


def dependencies(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    """Every callable a route depends on, however deep."""
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from dependencies(dep)


def complete_operation(route: RouteContext, operation: dict[str, Any]) -> None:
    """Add to one operation what its route's shape implies (see the module docstring)."""
    answers: dict[str, Any] = operation.setdefault("responses", {})
    calls = set(dependencies(route.dependant))
    if authenticate in calls:
        operation["security"] = list(_KEY_REQUIRED)
        answers.setdefault("401", error_response(Unauthorized))
    elif authenticate_addons in calls:
        # Public unless SEMANTEST_ADDONS_PUBLIC=false: a key is optional, a wrong one is 401.
        operation["security"] = [{}, *_KEY_REQUIRED]
        answers.setdefault("401", error_response(Unauthorized))
    if route.body_field is not None:
        answers.setdefault("413", error_response(PayloadTooLarge))
    fastapi_422 = answers.get("422", {}).get("content", {}).get("application/json", {})
    if fastapi_422.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
        answers["422"] = error_response(ValidationError)
    for answer in answers.values():
        # A new dict: FastAPI's copy of a route's `responses=` still shares the route's own.
        answer["headers"] = {**answer.get("headers", {}), **REQUEST_ID_HEADER}


def complete(document: dict[str, Any], app: FastAPI) -> None:
    """Complete FastAPI's document in place: every operation, the envelope, the key schemes."""
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = document["paths"].get(route.path_format, {}).get(method.lower())
            if operation is not None:
                complete_operation(route, operation)
    components = document.setdefault("components", {})
    _, defs = models_json_schema(
        [(ErrorEnvelope, "serialization")], ref_template="#/components/schemas/{model}"
    )
    schemas = components.setdefault("schemas", {})
    schemas.update(defs.get("$defs", {}))
    # FastAPI's 422 models: replaced by the envelope on every operation above.
    schemas.pop("HTTPValidationError", None)
    if "#/components/schemas/ValidationError" not in json.dumps(document):
        schemas.pop("ValidationError", None)
    components["securitySchemes"] = SECURITY_SCHEMES


def install(app: FastAPI) -> None:
    """Serve the completed document at `/openapi.json`.

    FastAPI builds its document once (again only when routes change); each new one is completed
    once.
    """
    build = app.openapi
    completed: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = build()
        if not completed or completed[0] is not document:
            complete(document, app)
            completed[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
