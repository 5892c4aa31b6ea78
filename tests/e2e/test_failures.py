"""Provider failures through the real stack: retryable ones are retried by RQ, the rest fail once.

Faults are injected into the sandbox provider, which then streams the same error turn a real
provider shows; the addon classifies it and the agent records it.
"""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest

from sandbox.render import render_png
from semantest.stack import Stack
from tests.e2e.conftest import Faults, wait_final

pytestmark = pytest.mark.e2e


def test_provider_error_is_retried_and_the_job_succeeds(api: httpx.Client, faults: Faults) -> None:
    prompt = f"retry me {uuid.uuid4().hex[:8]}"
    faults.inject("server")
    job_id = api.post("/api/v1/images/generate", json={"prompt": prompt}).json()["jobId"]
    record = wait_final(api, job_id, timeout=90)
    assert record["status"] == "succeeded", record.get("error")
    assert record["attempts"] == 2
    assert "retrying" in record["_seen"]
    assert record["error"] is None
    (image,) = record["images"]
    assert image["sha256"] == hashlib.sha256(render_png(prompt)).hexdigest()
    # the failed attempt left its evidence, served by URL
    assert api.get(record["artifacts"]["screenshot"]).content[:8] == b"\x89PNG\r\n\x1a\n"
    assert "503 upstream overloaded" in api.get(record["artifacts"]["dom"]).text


def test_refusal_fails_once_with_its_code(api: httpx.Client, faults: Faults) -> None:
    faults.inject("refusal")
    job_id = api.post("/api/v1/images/generate", json={"prompt": "refuse me"}).json()["jobId"]
    record = wait_final(api, job_id)
    assert record["status"] == "failed"
    assert record["attempts"] == 1 and record["images"] == []
    assert record["error"]["code"] == "CONTENT_REFUSED"
    assert record["error"]["retryable"] is False
    assert "content policy" in record["error"]["message"]


def test_retries_are_bounded_by_max_attempts(
    api: httpx.Client, stack: Stack, faults: Faults
) -> None:
    attempts = stack.settings.max_attempts
    faults.inject("server", attempts)
    job_id = api.post("/api/v1/images/generate", json={"prompt": "never lucky"}).json()["jobId"]
    record = wait_final(api, job_id, timeout=120)
    assert record["status"] == "failed"
    assert record["attempts"] == attempts
    assert record["error"]["code"] == "PROVIDER_ERROR"
    assert faults.pending() == []
