"""The audit log over real HTTP: authenticated writes are recorded with who, what and how it
ended; reads and anonymous calls are not; keys never appear; admins read it with filters."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import redis

from semantest import keys
from semantest.config import Settings
from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.integration


def entries_since(client: httpx.Client, since: float, **params: object) -> list[dict[str, object]]:
    reply = client.get("/api/v1/admin/audit", params={"since": since, **params})
    assert reply.status_code == 200, reply.text
    found: list[dict[str, object]] = reply.json()["entries"]
    return found


def test_writes_are_audited_with_who_what_and_outcome(
    client: httpx.Client, anon: httpx.Client
) -> None:
    since = time.time() - 0.01
    job_id = client.post("/api/v1/images/generate", json={"prompt": "audited"}).json()["jobId"]
    batch = client.post("/api/v1/images/batch", json={"prompts": ["a", "b"]}).json()
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 409
    assert client.post("/api/v1/images/generate", json={"prompt": ""}).status_code == 422
    client.get(f"/api/v1/images/status/{job_id}")  # a read: not audited
    anon.post("/api/v1/images/generate", json={"prompt": "no key"})  # 401: nobody to name
    time.sleep(0.2)
    found = list(reversed(entries_since(client, since, tenant="admin")))
    summary = [(e["method"], e["route"], e["status"], e["outcome"], e["error"]) for e in found]
    assert summary == [
        ("POST", "/api/v1/images/generate", 202, "ok", None),
        ("POST", "/api/v1/images/batch", 202, "ok", None),
        ("POST", "/api/v1/jobs/{job_id}/cancel", 200, "ok", None),
        ("POST", "/api/v1/jobs/{job_id}/cancel", 409, "refused", "CONFLICT"),
        ("POST", "/api/v1/images/generate", 422, "refused", "VALIDATION_ERROR"),
    ]
    first, second, cancel = found[0], found[1], found[2]
    assert first["targets"] == {"jobIds": [job_id]} and first["keyId"] == "bootstrap"
    assert second["targets"] == {"batchId": batch["batchId"], "jobIds": batch["jobIds"]}
    assert cancel["targets"] == {"job_id": job_id}
    assert all(e["ip"] == "127.0.0.1" and e["requestId"] and e["tenant"] == "admin" for e in found)
    # filters
    refused = entries_since(client, since, outcome="refused")
    assert [e["status"] for e in refused] == [422, 409]
    assert entries_since(client, since, tenant="someone-else") == []


def test_audit_pages_with_a_cursor(client: httpx.Client) -> None:
    since = time.time() - 0.01
    for i in range(5):
        client.post("/api/v1/images/generate", json={"prompt": f"page {i}"})
    time.sleep(0.2)
    first = client.get("/api/v1/admin/audit", params={"since": since, "limit": 3}).json()
    assert len(first["entries"]) == 3 and first["nextCursor"]
    rest = client.get(
        "/api/v1/admin/audit", params={"since": since, "limit": 3, "cursor": first["nextCursor"]}
    ).json()
    assert len(rest["entries"]) == 2 and rest["nextCursor"] is None
    ids = [e["id"] for e in first["entries"] + rest["entries"]]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)
    bad = client.get("/api/v1/admin/audit", params={"since": 5, "until": 1})
    assert bad.status_code == 422


def test_keys_never_reach_the_audit_log(
    client: httpx.Client, api_settings: Settings, redis_url: str
) -> None:
    client.post("/api/v1/images/generate", json={"prompt": "secret-free"})
    time.sleep(0.2)
    r = redis.Redis.from_url(redis_url)
    stream = r.xrange(keys.AUDIT)
    assert stream, "nothing audited"
    text = b"".join(fields[b"entry"] for _id, fields in stream)
    assert ADMIN_KEY.encode() not in text
    audit_file = Path(api_settings.data_dir) / "logs" / "audit.jsonl"
    lines = audit_file.read_text().splitlines()
    assert lines and ADMIN_KEY not in audit_file.read_text()
    assert all(json.loads(line)["tenant"] for line in lines)
    # the stream is trimmed by age: everything in it is younger than the retention
    oldest_ms = int(stream[0][0].decode().split("-")[0])
    assert oldest_ms > (time.time() - api_settings.audit_retention_days * 86400) * 1000


def test_only_admins_read_the_audit_log_and_key_changes_are_in_it(
    client: httpx.Client, controller_url: str
) -> None:
    since = time.time() - 0.01
    created = client.post(
        "/api/v1/admin/keys",
        json={"tenant": "audited-tenant", "scopes": ["jobs:read", "jobs:write"]},
    )
    assert created.status_code == 201, created.text
    key, prefix = created.json()["key"], created.json()["prefix"]
    with httpx.Client(base_url=controller_url, headers={"Authorization": f"Bearer {key}"}) as t:
        denied = t.get("/api/v1/admin/audit")
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "FORBIDDEN"
        job_id = t.post("/api/v1/images/generate", json={"prompt": "by a tenant"}).json()["jobId"]
    assert client.delete(f"/api/v1/admin/keys/{prefix}").status_code in (200, 204)
    time.sleep(0.2)
    found = list(reversed(entries_since(client, since)))
    summary = [(e["tenant"], e["route"], e["status"]) for e in found]
    assert summary == [
        ("admin", "/api/v1/admin/keys", 201),
        ("audited-tenant", "/api/v1/images/generate", 202),
        ("admin", "/api/v1/admin/keys/{prefix}", found[2]["status"]),
    ]
    assert found[1]["keyId"] == prefix and found[1]["targets"] == {"jobIds": [job_id]}
    assert found[2]["targets"] == {"prefix": prefix}
    text = json.dumps(found)
    assert key not in text  # the new key was shown once, to its creator, never logged
