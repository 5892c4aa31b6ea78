"""The HTTP API over real HTTP against a real redis-server (no agent: jobs stay queued)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis
from rq.job import Job

from semantest import keys

pytestmark = pytest.mark.integration


def error_of(reply: httpx.Response) -> dict[str, object]:
    body = reply.json()
    assert set(body) == {"error"}
    err: dict[str, object] = body["error"]
    assert err["requestId"] == reply.headers["x-request-id"]
    return err


def test_generate_queues_a_job_in_rq_and_records_it(client: httpx.Client, redis_url: str) -> None:
    reply = client.post("/api/v1/images/generate", json={"prompt": "a tiny robot"})
    assert reply.status_code == 202
    body = reply.json()
    assert set(body) == {"jobId", "status", "statusUrl"} and body["status"] == "queued"
    status = client.get(body["statusUrl"])
    assert status.status_code == 200
    record = status.json()
    assert record["id"] == body["jobId"] and record["prompt"] == "a tiny robot"
    assert record["tenant"] == "admin" and record["images"] == [] and "createdAt" in record
    # waiting in the tenant's fair queue of its lane, as an RQ job of the same id (dotted path)
    r = redis.Redis.from_url(redis_url)
    queue_key = keys.fair_queue("sandbox", "normal", "admin")
    assert body["jobId"].encode() in r.lrange(queue_key, 0, -1)
    assert b"admin" in r.lrange(keys.fair_ring("sandbox", "normal"), 0, -1)
    job = Job.fetch(body["jobId"], connection=r)
    assert job.func_name == keys.GENERATE_FUNC and job.args == (body["jobId"],)
    assert job.get_status() == "queued" and job.origin == keys.queue_name("sandbox", "normal")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "sandbox"}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"prompt": "ok", "provider": "midjourney"}, "provider"),
        ({"prompt": "ok", "options": {"count": 0}}, "options.count"),
        ({"prompt": 42}, "prompt"),
    ],
)
def test_bad_body_is_422_naming_the_field(
    client: httpx.Client, body: dict[str, object], field: str
) -> None:
    reply = client.post("/api/v1/images/generate", json=body)
    assert reply.status_code == 422
    err = error_of(reply)
    assert err["code"] == "VALIDATION_ERROR"
    assert field in [d["field"] for d in err["details"]]  # type: ignore[attr-defined]
    assert field in str(err["message"])


def test_malformed_json_is_422(client: httpx.Client) -> None:
    reply = client.post(
        "/api/v1/images/generate",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 422 and error_of(reply)["code"] == "VALIDATION_ERROR"


def test_body_over_1_mib_is_413(client: httpx.Client) -> None:
    reply = client.post("/api/v1/images/generate", content=b"x" * (1024 * 1024 + 1))
    assert reply.status_code == 413 and error_of(reply)["code"] == "PAYLOAD_TOO_LARGE"


def test_chunked_body_over_1_mib_is_413_and_under_is_read(client: httpx.Client) -> None:
    def chunks(total: int) -> Iterator[bytes]:  # an iterator: httpx sends it chunked, no length
        for start in range(0, total, 64 * 1024):
            yield b" " * min(64 * 1024, total - start)

    big = client.post("/api/v1/images/generate", content=chunks(1024 * 1024 + 1))
    assert big.status_code == 413 and error_of(big)["code"] == "PAYLOAD_TOO_LARGE"
    body = b'{"prompt": "chunked", "provider": "sandbox"}'
    small = client.post(
        "/api/v1/images/generate",
        content=iter([body[:10], body[10:]]),
        headers={"Content-Type": "application/json"},
    )
    assert small.status_code == 202, small.text


def test_unknown_job_is_404(client: httpx.Client) -> None:
    reply = client.get("/api/v1/images/status/does-not-exist")
    assert reply.status_code == 404 and error_of(reply)["code"] == "JOB_NOT_FOUND"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}]
)
def test_job_routes_need_a_key(anon: httpx.Client, headers: dict[str, str]) -> None:
    for reply in (
        anon.post("/api/v1/images/generate", json={"prompt": "p"}, headers=headers),
        anon.get("/api/v1/images/status/x", headers=headers),
        anon.get("/api/v1/images/admin/" + "0" * 64 + ".png", headers=headers),
    ):
        assert reply.status_code == 401 and error_of(reply)["code"] == "UNAUTHORIZED"


def test_x_api_key_header_works_too(anon: httpx.Client) -> None:
    from tests.conftest import ADMIN_KEY

    reply = anon.post(
        "/api/v1/images/generate", json={"prompt": "p"}, headers={"X-API-Key": ADMIN_KEY}
    )
    assert reply.status_code == 202


def test_images_of_other_tenants_and_bad_keys_are_404(client: httpx.Client) -> None:
    for key in ("other/" + "0" * 64 + ".png", "admin/" + "0" * 64 + ".png", "admin/not-a-key.png"):
        reply = client.get(f"/api/v1/images/{key}")
        assert reply.status_code == 404 and error_of(reply)["code"] == "IMAGE_NOT_FOUND"
    # a path that is no image key is no route: other routes under /images keep their answers
    traversal = client.get("/api/v1/images/..%2F..%2Fetc")
    assert traversal.status_code == 404 and error_of(traversal)["code"] == "NOT_FOUND"
    wrong_method = client.get("/api/v1/images/generate")
    assert (
        wrong_method.status_code == 405 and error_of(wrong_method)["code"] == "METHOD_NOT_ALLOWED"
    )


def test_health_reports_redis_queues_agents(anon: httpx.Client) -> None:
    reply = anon.get("/api/v1/health")
    assert reply.status_code == 200
    body = reply.json()
    assert body["redis"] == "ok" and body["storage"] == "ok" and body["agents"] == 0
    assert keys.queue_name("sandbox", "normal") in body["queues"]


def test_request_id_is_echoed(anon: httpx.Client) -> None:
    reply = anon.get("/api/v1/images/status/x", headers={"X-Request-ID": "trace-123"})
    assert reply.headers["x-request-id"] == "trace-123"
    assert error_of(reply)["requestId"] == "trace-123"


def test_unknown_route_uses_the_envelope(anon: httpx.Client) -> None:
    reply = anon.get("/api/v1/nope")
    assert reply.status_code == 404 and error_of(reply)["code"] == "NOT_FOUND"


def test_openapi_lists_the_routes(anon: httpx.Client) -> None:
    paths = json.loads(anon.get("/openapi.json").text)["paths"]
    assert {
        "/api/v1/images/generate",
        "/api/v1/images/status/{job_id}",
        "/api/v1/health",
        "/api/v1/addons",
        "/api/v1/addons/{addon_id}",
    } <= set(paths)
