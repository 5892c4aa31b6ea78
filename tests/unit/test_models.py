"""The job contract: camelCase JSON, status enum, request bounds."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from semantest.models import GenerateRequest, ImageRecord, JobRecord, JobStatus, Priority

pytestmark = pytest.mark.unit


def test_status_is_a_str_enum_with_terminal_states() -> None:
    assert JobStatus("succeeded") is JobStatus.SUCCEEDED
    assert JobStatus.QUEUED == "queued"
    assert {s for s in JobStatus if s.terminal} == {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELED,
    }


def test_record_json_is_camel_case_and_round_trips() -> None:
    record = JobRecord(tenant="acme", provider="sandbox", prompt="a cat", batch_id="b1")
    data = json.loads(record.to_json())
    assert {"createdAt", "startedAt", "finishedAt", "batchId", "idempotencyKey"} <= data.keys()
    assert "created_at" not in data
    assert data["status"] == "queued" and data["priority"] == "normal"
    assert JobRecord.from_json(record.to_json()) == record


def test_request_accepts_snake_or_camel_and_defaults() -> None:
    req = GenerateRequest.model_validate({"prompt": "  a dog  "})
    assert req.prompt == "a dog"
    assert req.provider == "sandbox" and req.priority is Priority.NORMAL
    assert req.options.count == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "ok", "priority": "urgent"}, "priority"),
        ({"prompt": "ok", "options": {"count": 9}}, "options"),
        ({"prompt": "ok", "options": {"size": "huge"}}, "options"),
        ({"prompt": "ok", "surprise": 1}, "surprise"),
    ],
)
def test_request_bounds_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate(body)
    assert info.value.errors()[0]["loc"][0] == field


def test_image_record_requires_a_real_sha256() -> None:
    with pytest.raises(ValidationError):
        ImageRecord(
            url="u", key="k", sha256="nothex", width=1, height=1, content_type="image/png", bytes=1
        )
