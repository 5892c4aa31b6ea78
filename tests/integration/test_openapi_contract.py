"""The API keeps the contract `/openapi.json` states: schemathesis, every check, every operation.

Runs the same checks as `schemathesis run /openapi.json --checks all` (all are on by default;
`CONFIG` widens one expectation of one operation, and says why): per operation its examples,
coverage and fuzzing phases (`test_operation`), then the stateful phase over the links
schemathesis infers (submit a job, read its status: `test_stateful`).
Against the real controller over HTTP with real Redis, authenticated with the test admin key;
no agent runs, so submitted jobs just stay queued. Examples are bounded to keep the file well
under a minute. No HTTP operation is excluded; the live-progress WebSocket `/api/v1/ws` has no
OpenAPI operation and is covered by tests/integration/test_events_ws.py.

The schema is the in-process app's document, loaded when the module is imported: schemathesis'
lazy `from_fixture` loader does not work with this pytest (it sets `Node._nodeid`, which pytest
9.2 removed). `test_served_document_is_the_one_tested` keeps the two equal.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from controller.app import create_app
from controller.openapi import API_CODES
from semantest.config import Settings
from semantest.stack import free_port
from tests.conftest import ADMIN_KEY, serve_controller

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
DOCUMENT: dict[str, Any] = create_app(Settings()).openapi()
#: Every check on, as `--checks all`, with stated exceptions: `GET /api/v1/jobs` refuses a
#: `cursor` it did not issue (422 VALIDATION_ERROR, field `cursor`), and no schema can say which
#: strings the server issued, so a well-formed but foreign cursor may be refused there.
CONFIG = SchemathesisConfig.from_dict(
    {
        "operations": [
            # live event streams stay open until their job is final (none runs here): one
            # second shows their first answer and headers
            {"include-path-regex": "/events$", "request-timeout": 1},
            {
                "include-path": "/api/v1/jobs",
                "include-method": "GET",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "3xx", 401, 403, 404, 409, 422, 429, "5xx"]
                    }
                },
            },
            # Publishing: a manifest must agree with the URL's id and version, list exactly the
            # files sent, parse as JavaScript and name dependencies that exist; `resolve` needs
            # an absolute URL. No schema can say those, so a schema-valid body may be a 422.
            *(
                {
                    "include-path": path,
                    "include-method": method,
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", "3xx", 401, 403, 404, 409, 422, 429, "5xx"]
                        },
                        # a file over its limit can make the body exceed 1 MiB: 413 first
                        "negative_data_rejection": {
                            "expected-statuses": [
                                *(400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429),
                                "5xx",
                            ]
                        },
                    },
                }
                for path, method in (
                    ("/api/v1/addons/{addon_id}/versions/{version}", "PUT"),
                    ("/api/v1/addons/resolve", "GET"),
                )
            ),
            # Submissions: an option its provider does not honour (`size` for `chatgpt`) is
            # refused naming the field; the schema's provider enum cannot say which honours what.
            *(
                {
                    "include-path": path,
                    "include-method": "POST",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", "3xx", 401, 403, 404, 409, 422, 429, "5xx"]
                        }
                    },
                }
                for path in (
                    "/api/v1/images/generate",
                    "/api/v1/images/batch",
                    "/api/v1/batch/generate",
                )
            ),
        ]
    }
)
#: A copy: schemathesis writes into the document it is given (the links it infers).
schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT), config=CONFIG)

#: Bounded: ~25 generated requests per operation and phase, no per-example deadline (the first
#: request of a run may wait on a cold connection pool), no example database on disk.
BOUNDED = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@schema.parametrize()
@BOUNDED
def test_operation(case: Case, controller_url: str) -> None:
    case.call_and_validate(base_url=controller_url, headers=AUTH)


@pytest.fixture(scope="module")
def stateful_controller(api_settings: Settings) -> Iterator[tuple[str, redis.Redis]]:
    """A controller of its own on Redis database 50, rate limits off.

    Hypothesis replays choices and requires the same choices to lead to the same draws. In a
    stateful run the draws depend on the server's answers (a bundle fills only after a 202), so
    each scenario must start from the same server state: `Machine.setup` empties this database.
    The shared controller cannot give that (other tests' jobs, idempotency keys, rate limits).
    """
    settings = api_settings.model_copy(
        update={
            "redis_url": api_settings.redis_url.rsplit("/", 1)[0] + "/50",
            "port": free_port(),
            "rate_limits": False,
        }
    )
    db = redis.Redis.from_url(settings.redis_url)
    db.flushdb()
    with serve_controller(settings) as url:
        yield url, db
    db.flushdb()
    db.close()


def test_stateful(stateful_controller: tuple[str, redis.Redis]) -> None:
    url, db = stateful_controller

    class Machine(schema.as_state_machine()):  # type: ignore[misc]  # a class built at runtime
        def setup(self) -> None:
            db.flushdb()

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": url, "headers": AUTH}

    Machine.run(
        settings=settings(BOUNDED, max_examples=15, stateful_step_count=6),
    )


def test_served_document_is_the_one_tested(anon: httpx.Client) -> None:
    assert anon.get("/openapi.json").json() == DOCUMENT


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, ops in DOCUMENT["paths"].items()
        for method, operation in ops.items()
    ]


def test_every_answer_is_documented_with_an_example() -> None:
    missing = []
    for method, path, operation in operations():
        for status, answer in operation["responses"].items():
            contents = answer.get("content") or {}
            if int(status) in (204, 302, 304) and not contents:
                continue  # no body to show
            # Image bytes have no example worth showing; JSON and text answers do.
            shown = {t: m for t, m in contents.items() if not t.startswith("image/")}
            if not contents or any(
                "example" not in media and not media.get("examples") for media in shown.values()
            ):
                missing.append(f"{method} {path} {status}")
    assert not missing, "answers without an example: " + ", ".join(missing)


def validator_of(media: dict[str, Any]) -> Any:
    root = {**media.get("schema", {}), "components": DOCUMENT["components"]}
    return jsonschema_rs.validator_for(root)


def test_examples_agree_with_their_schemas() -> None:
    wrong = []
    for method, path, operation in operations():
        for status, answer in operation["responses"].items():
            for media_type, media in (answer.get("content") or {}).items():
                if "schema" not in media or not media_type.endswith("json"):
                    continue
                values = [media["example"]] if "example" in media else []
                values += [e["value"] for e in media.get("examples", {}).values()]
                validator = validator_of(media)
                wrong += [
                    f"{method} {path} {status}: {error.message}"
                    for value in values
                    for error in validator.iter_errors(value)
                ]
    assert not wrong, "\n".join(wrong)


def test_errors_are_the_envelope_with_a_contract_code() -> None:
    codes = {
        "VALIDATION_ERROR",
        "UNAUTHORIZED",
        "FORBIDDEN",
        "DOMAIN_NOT_ALLOWED",
        "NOT_FOUND",
        "JOB_NOT_FOUND",
        "ADDON_NOT_FOUND",
        "IMAGE_NOT_FOUND",
        "METHOD_NOT_ALLOWED",
        "CONFLICT",
        "PAYLOAD_TOO_LARGE",
        "RATE_LIMITED",
        "UNAVAILABLE",
        "INTERNAL_ERROR",
    }
    assert set(API_CODES) == codes
    assert "HTTPValidationError" not in str(DOCUMENT)
    for method, path, operation in operations():
        for status, answer in operation["responses"].items():
            if int(status) < 400 or path.endswith("/health"):
                continue
            media = answer["content"]["application/json"]
            assert media["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}, (
                f"{method} {path} {status}"
            )


def test_routes_document_what_their_shape_implies() -> None:
    for method, path, operation in operations():
        answers = operation["responses"]
        if "requestBody" in operation:
            assert {"413", "422"} <= set(answers), f"{method} {path}"
        if operation.get("security") and {} not in operation["security"]:
            assert "401" in answers, f"{method} {path}"
    public = {path for _, path, op in operations() if not op.get("security")}
    assert {"/api/v1/health", "/api/v1/pressure"} <= public
