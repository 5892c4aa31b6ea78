"""Bad requests the router or the body parser refuses still answer with a contract code.

A body that is not JSON, or not sent as JSON, is `422 VALIDATION_ERROR` naming the field `body`
and saying where or why it breaks; a method a path does not take is `405 METHOD_NOT_ALLOWED`
with `Allow`. Real controller over HTTP, real Redis.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

GENERATE = "/api/v1/images/generate"


def error_of(reply: httpx.Response) -> dict[str, Any]:
    body = reply.json()
    assert set(body) == {"error"}
    err: dict[str, Any] = body["error"]
    assert err["requestId"] == reply.headers["x-request-id"]
    return err


def body_reason(reply: httpx.Response) -> str:
    assert reply.status_code == 422, reply.text
    err = error_of(reply)
    assert err["code"] == "VALIDATION_ERROR"
    assert [d["field"] for d in err["details"]] == ["body"]
    reason: str = err["details"][0]["reason"]
    expected = f"body is {reason}" if reason.startswith("not valid JSON") else f"body: {reason}"
    assert err["message"] == expected
    return reason


def post(client: httpx.Client, content: bytes, content_type: str | None) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return client.post(GENERATE, content=content, headers=headers)


def test_malformed_json_says_where_it_breaks(client: httpx.Client) -> None:
    reply = post(client, b'{\n  "prompt": "a robot"\n  "provider": "sandbox"}', "application/json")
    assert body_reason(reply) == "not valid JSON: Expecting ',' delimiter at line 3 column 3"


def test_truncated_json_is_the_body_not_a_byte_offset(client: httpx.Client) -> None:
    reply = post(client, b'{"prompt": "a rob', "application/json")
    reason = body_reason(reply)
    assert reason.startswith("not valid JSON: ") and "line 1 column 12" in reason


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_json_sent_without_a_json_content_type(
    client: httpx.Client, content_type: str | None
) -> None:
    reply = post(client, b'{"prompt": "a robot"}', content_type)
    reason = body_reason(reply)
    assert "Content-Type: application/json" in reason
    assert (content_type or "no Content-Type") in reason


def test_body_that_is_not_utf8(client: httpx.Client) -> None:
    reply = post(client, b'{"prompt": "\xff\xfe"}', "application/json")
    assert body_reason(reply).startswith("not valid JSON: not UTF-8 text")


def test_json_nested_too_deeply(client: httpx.Client) -> None:
    reply = post(client, b"[" * 100_000 + b"]" * 100_000, "application/json")
    assert body_reason(reply) == "not valid JSON: nested too deeply"


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b'["a robot"]', "an array"),
        (b'"a robot"', "a string"),
        (b"4", "a number"),
        (b"null", "null"),
    ],
)
def test_json_that_is_not_an_object(client: httpx.Client, content: bytes, kind: str) -> None:
    reply = post(client, content, "application/json")
    assert body_reason(reply) == f"expected a JSON object, got {kind}"


def test_missing_body(client: httpx.Client) -> None:
    reply = post(client, b"", "application/json")
    assert reply.status_code == 422
    err = error_of(reply)
    assert err["code"] == "VALIDATION_ERROR" and err["details"][0]["field"] == "body"


def test_wrong_method_is_405_with_allow(client: httpx.Client) -> None:
    reply = client.delete("/api/v1/health")
    assert reply.status_code == 405 and reply.headers["allow"] == "GET"
    err = error_of(reply)
    assert err["code"] == "METHOD_NOT_ALLOWED"
    assert err["message"] == "DELETE /api/v1/health is not allowed (allowed: GET)"


def test_no_answer_uses_a_code_outside_the_contract(client: httpx.Client) -> None:
    from controller.openapi import API_CODES

    replies = [
        post(client, b"\x00\x01", "application/json"),
        post(client, b"{}", "application/merge-patch+json"),
        client.put(GENERATE, json={"prompt": "p"}),
        client.get("/api/v1/nope"),
    ]
    for reply in replies:
        assert reply.status_code in (404, 405, 422), reply.text
        assert error_of(reply)["code"] in API_CODES


def test_fields_inside_unions_are_named_as_sent(client: httpx.Client) -> None:
    reply = client.post("/api/v1/images/batch", json={"prompts": ["ok", {"prompt": ""}, 7]})
    assert reply.status_code == 422
    fields = {d["field"] for d in error_of(reply)["details"]}
    assert fields == {"prompts.1", "prompts.1.prompt", "prompts.2"}, fields


def test_unknown_fields_are_named_as_sent(client: httpx.Client) -> None:
    reply = client.post(GENERATE, json={"prompt": "p", "Style-Hint": 1})
    assert reply.status_code == 422
    assert [d["field"] for d in error_of(reply)["details"]] == ["Style-Hint"]


def test_a_query_parameter_given_twice_is_refused_by_name(client: httpx.Client) -> None:
    reply = client.get("/api/v1/jobs?limit=5&limit=7")
    assert reply.status_code == 422
    err = error_of(reply)
    assert err["code"] == "VALIDATION_ERROR"
    assert err["details"] == [{"field": "limit", "reason": "given more than once"}]
    assert client.get("/api/v1/jobs?limit=5").status_code == 200


def test_an_empty_id_filter_is_refused(client: httpx.Client) -> None:
    reply = client.get("/api/v1/webhooks/deliveries?jobId=")
    assert reply.status_code == 422
    assert [d["field"] for d in error_of(reply)["details"]] == ["jobId"]
