"""The mistakes a newcomer makes in the first hour, each answered so they can act on it, and the
README telling the truth about codes, options and timestamps. Real controller, real Redis."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.openapi import API_CODES
from semantest.errors import GenerationFailed, RetryableFailure

pytestmark = pytest.mark.integration


def section(readme: str, title: str) -> str:
    """The text of one `### title` section of the README."""
    start = readme.index(f"### {title}\n")
    end = readme.find("\n## ", start)
    following = readme.find("\n### ", start + 1)
    return readme[start : min(i for i in (end, following) if i != -1)]


@pytest.fixture(scope="module")
def readme(repo_root: Path) -> str:
    return (repo_root / "README.md").read_text()


def test_malformed_json_says_where_in_the_message_with_no_fake_field(
    client: httpx.Client,
) -> None:
    reply = client.post(
        "/api/v1/images/generate",
        content=b'{"prompt": "a cat",\n "options": {"count": 2 "size": "256x256"}}',
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"] == (
        "body is not valid JSON: Expecting ',' delimiter at line 2 column 25"
    )
    assert error["details"] == [
        {"field": "body", "reason": "not valid JSON: Expecting ',' delimiter at line 2 column 25"}
    ]


@pytest.mark.parametrize("path", ["/api/v1/images/generate", "/api/v1/images/batch"])
def test_a_route_name_is_never_taken_for_an_image_key(client: httpx.Client, path: str) -> None:
    reply = client.get(path)
    assert reply.status_code == 405 and reply.headers["allow"] == "POST"
    error = reply.json()["error"]
    assert error["code"] == "METHOD_NOT_ALLOWED"
    assert error["message"] == f"GET {path} is not allowed (allowed: POST)"


def test_status_without_an_id_is_no_route_and_a_trailing_slash_is_the_route(
    client: httpx.Client,
) -> None:
    reply = client.get("/api/v1/images/status")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "NOT_FOUND"
    job_id = client.post("/api/v1/images/generate", json={"prompt": "slash"}).json()["jobId"]
    slashed = client.get(f"/api/v1/images/status/{job_id}/")
    assert slashed.status_code == 307
    assert slashed.headers["location"].endswith(f"/api/v1/images/status/{job_id}")
    followed = client.get(f"/api/v1/images/status/{job_id}/", follow_redirects=True)
    assert followed.status_code == 200 and followed.json()["id"] == job_id


def test_the_readme_lists_every_error_code_the_api_answers(readme: str) -> None:
    table = section(readme, "Error codes").split("A failed job is not an error answer")[0]
    listed = set(re.findall(r"^\| \d{3} \| `([A-Z_]+)`", table, re.MULTILINE))
    assert listed == set(API_CODES)


def test_the_readme_lists_every_job_error_code(readme: str, repo_root: Path) -> None:
    jobs = section(readme, "Error codes").split("A failed job is not an error answer")[1]
    listed = set(re.findall(r"`([A-Z_]{4,})`", jobs))
    driver = (repo_root / "addons" / "sandbox" / "driver.js").read_text()
    raised = set(re.findall(r'fail\("([A-Z_]+)"', driver)) - {"CANCELED"}  # a status, not an error
    agents = "\n".join(p.read_text() for p in (repo_root / "agents").glob("*.py"))
    raised |= set(re.findall(r'Failure\([^()]*?"([A-Z_]+)"\)', agents, re.DOTALL))
    raised |= {GenerationFailed.code, RetryableFailure.code, "AGENT_LOST", "TIMEOUT"}
    assert raised <= listed, raised - listed


def test_every_timestamp_is_epoch_seconds_and_the_readme_says_so(
    client: httpx.Client, readme: str
) -> None:
    document = client.get("/openapi.json").json()
    stamps: dict[str, Any] = {}
    for schema in document["components"]["schemas"].values():
        for name, prop in schema.get("properties", {}).items():
            if (name.endswith("At") and name != "resumeAt") or name in ("at", "timestamp"):
                stamps[name] = prop
    assert {"createdAt", "startedAt", "finishedAt", "at", "beatAt"} <= stamps.keys()
    for name, prop in stamps.items():
        types = {prop.get("type")} | {p.get("type") for p in prop.get("anyOf", [])}
        assert types - {None} <= {"number", "null"}, (name, prop)
    text = section(readme, "Timestamps")
    assert "Unix time in\nseconds (UTC) as a JSON number" in text
    for name in stamps:
        assert f"`{name}`" in text, name
    job_id = client.post("/api/v1/images/generate", json={"prompt": "t"}).json()["jobId"]
    record = client.get(f"/api/v1/images/status/{job_id}").json()
    assert isinstance(record["createdAt"], float)


def test_the_readme_says_which_provider_honours_which_option(readme: str) -> None:
    from semantest.models import HONOURED_BY

    text = section(readme, "Options")
    for option, providers in HONOURED_BY.items():
        row = re.search(rf"^\| `{option}` \|[^|]*\| ([^|]*) \|", text, re.MULTILINE)
        assert row, option
        assert set(re.findall(r"`(\w+)`", row.group(1))) == set(providers), option


def test_the_readme_shows_how_to_make_a_job_fail(readme: str) -> None:
    text = section(readme, "Make a job fail on purpose")
    assert "POST /_sandbox/faults" in text
    for kind in ("refusal", "server", "ratelimit", "hang"):
        assert f"| `{kind}` |" in text, kind
    assert '"code": "CONTENT_REFUSED"' in text
    for token in ("refuse", "ratelimit", "logout", "slow", "images=3", "broken", "hang"):
        assert f"`[sandbox:{token}]" in text, token
