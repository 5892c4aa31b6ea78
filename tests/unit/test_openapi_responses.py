"""`controller.openapi.responses`: the error answers a route documents, with examples."""

from __future__ import annotations

from typing import Any

import pytest

from controller.openapi import ENVELOPE_REF, responses
from semantest.errors import Conflict, ImageNotFound, JobNotFound

pytestmark = pytest.mark.unit


def media(answer: dict[str, Any]) -> dict[str, Any]:
    content: dict[str, Any] = answer["content"]["application/json"]
    assert content["schema"] == {"$ref": ENVELOPE_REF}
    return content


def code_of(answer: dict[str, Any]) -> str:
    code: str = media(answer)["example"]["error"]["code"]
    return code


def test_statuses_answer_with_their_default_codes() -> None:
    out = responses(404, 409)
    assert list(out) == [404, 409]
    assert code_of(out[404]) == "NOT_FOUND" and code_of(out[409]) == "CONFLICT"
    assert out[404]["description"] == "NOT_FOUND"


def test_example_code_names_the_code_of_its_status() -> None:
    out = responses(404, 409, example_code="JOB_NOT_FOUND")
    assert code_of(out[404]) == "JOB_NOT_FOUND" and code_of(out[409]) == "CONFLICT"
    assert code_of(responses(example_code="ADDON_NOT_FOUND")[404]) == "ADDON_NOT_FOUND"


def test_error_classes_and_several_codes_under_one_status() -> None:
    out = responses(JobNotFound, ImageNotFound, Conflict)
    assert list(out) == [404, 409]
    examples = media(out[404])["examples"]
    assert {name: e["value"]["error"]["code"] for name, e in examples.items()} == {
        "JOB_NOT_FOUND": "JOB_NOT_FOUND",
        "IMAGE_NOT_FOUND": "IMAGE_NOT_FOUND",
    }
    assert out[404]["description"] == "JOB_NOT_FOUND or IMAGE_NOT_FOUND"


def test_retry_statuses_document_retry_after() -> None:
    out = responses(429, 503)
    assert all("Retry-After" in out[s]["headers"] for s in (429, 503))


def test_validation_errors_show_a_field_and_the_body() -> None:
    examples = media(responses(422)[422])["examples"]
    fields = {e["value"]["error"]["details"][0]["field"] for e in examples.values()}
    assert fields == {"options.count", "body"}
