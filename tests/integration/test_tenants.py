"""Tenants and API keys through the admin API, over real HTTP against a real Redis.

Two tenants get keys from `POST /api/v1/admin/keys` (the bootstrap admin key makes them) and
each sees only its own jobs, batches, chats, job list and images: the other's are missing
(404). Scopes are enforced per route, a revoked key is refused within a second, keys are shown
once and only their sha256 is stored. No agent runs, so submitted jobs stay queued.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from semantest import keys
from semantest.config import Settings
from semantest.storage import storage_from_settings
from semantest.tenants import Plan

pytestmark = pytest.mark.integration


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def make_key(admin: httpx.Client, tenant: str, **body: Any) -> dict[str, Any]:
    reply = admin.post("/api/v1/admin/keys", json={"tenant": tenant, **body})
    assert reply.status_code == 201, reply.text
    created: dict[str, Any] = reply.json()
    return created


@pytest.fixture
def as_key(controller_url: str) -> Iterator[Any]:
    """`as_key(key)`: an HTTP client sending that key; closed after the test."""
    opened: list[httpx.Client] = []

    def open_client(key: str) -> httpx.Client:
        c = httpx.Client(
            base_url=controller_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        opened.append(c)
        return c

    yield open_client
    for c in opened:
        c.close()


def code_of(reply: httpx.Response) -> str:
    code: str = reply.json()["error"]["code"]
    return code


def test_a_key_is_shown_once_with_its_prefix_and_a_new_tenant_gets_a_webhook_secret(
    client: httpx.Client,
) -> None:
    tenant = new_tenant()
    created = make_key(client, tenant, plan="partner", scopes=["jobs:read", "jobs:write"])
    key = created["key"]
    assert key.startswith("sk_") and len(key) >= 40 and "." not in key
    assert created["prefix"] == key[:11]
    assert created["tenant"] == tenant and created["plan"] == "partner"
    assert created["scopes"] == ["jobs:write", "jobs:read"]
    assert created["createdAt"] <= time.time() and created["revoked"] is False
    secret = created["webhookSecret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    # a second key of the tenant: the tenant's plan, default scopes, no secret
    second = make_key(client, tenant)
    assert "webhookSecret" not in second and second["plan"] == "partner"
    assert second["scopes"] == ["jobs:write", "jobs:read", "addons:read"]
    assert second["prefix"] != created["prefix"]


def test_the_list_names_keys_by_prefix_never_whole_or_hashed(client: httpx.Client) -> None:
    tenant = new_tenant()
    created = [make_key(client, tenant) for _ in range(2)]
    reply = client.get("/api/v1/admin/keys", params={"tenant": tenant})
    assert reply.status_code == 200
    listed = reply.json()["keys"]
    assert [k["prefix"] for k in listed] == [c["prefix"] for c in created]
    assert all(
        set(k) <= {"prefix", "tenant", "plan", "scopes", "createdAt", "revoked", "revokedAt"}
        for k in listed
    )
    everything = client.get("/api/v1/admin/keys").text
    for c in created:
        assert c["prefix"] in everything
        assert c["key"] not in everything
        assert hashlib.sha256(c["key"].encode()).hexdigest() not in everything


def test_only_the_sha256_of_a_key_is_stored(client: httpx.Client, redis_url: str) -> None:
    created = make_key(client, new_tenant())
    key = created["key"].encode()
    r = redis.Redis.from_url(redis_url)
    digest = hashlib.sha256(key).hexdigest()
    assert r.hget(keys.api_key(digest), "prefix") == created["prefix"].encode()
    for name in r.scan_iter(count=1000):
        assert key not in name
        kind = r.type(name)
        if kind == b"string":
            values = [r.get(name) or b""]
        elif kind == b"hash":
            values = [*r.hgetall(name).keys(), *r.hgetall(name).values()]
        elif kind == b"list":
            values = r.lrange(name, 0, -1)
        elif kind == b"set":
            values = list(r.smembers(name))
        elif kind == b"zset":
            values = r.zrange(name, 0, -1)
        elif kind == b"stream":
            values = [v for _id, fields in r.xrange(name) for v in fields.values()]
        else:
            values = []
        assert not any(key in v for v in values), f"the key's text is in {name!r}"


def test_a_plan_that_differs_from_the_tenants_is_a_conflict(client: httpx.Client) -> None:
    tenant = new_tenant()
    make_key(client, tenant)  # standard
    reply = client.post("/api/v1/admin/keys", json={"tenant": tenant, "plan": "partner"})
    assert reply.status_code == 409 and code_of(reply) == "CONFLICT"
    assert f"PUT /api/v1/admin/tenants/{tenant}" in reply.json()["error"]["message"]
    assert (
        client.put(f"/api/v1/admin/tenants/{tenant}", json={"plan": "partner"}).status_code == 200
    )
    assert make_key(client, tenant, plan="partner")["plan"] == "partner"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tenant": "Acme"}, "tenant"),
        ({"tenant": "a/b"}, "tenant"),
        ({"tenant": "ok", "scopes": ["jobs:delete"]}, "scopes.0"),
        ({"tenant": "ok", "scopes": []}, "scopes"),
        ({"tenant": "ok", "plan": "gold"}, "plan"),
    ],
)
def test_a_bad_key_request_names_the_field(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    reply = client.post("/api/v1/admin/keys", json=body)
    assert reply.status_code == 422 and code_of(reply) == "VALIDATION_ERROR"
    assert field in [d["field"] for d in reply.json()["error"]["details"]]


def test_each_tenant_sees_only_its_own(
    client: httpx.Client, as_key: Any, api_settings: Settings
) -> None:
    a = as_key(make_key(client, new_tenant())["key"])
    b_tenant = new_tenant()
    b = as_key(make_key(client, b_tenant)["key"])
    job = a.post("/api/v1/images/generate", json={"prompt": "a's lighthouse"}).json()["jobId"]
    batch = a.post("/api/v1/images/batch", json={"prompts": ["a one", "a two"]}).json()
    chat = a.post("/api/v1/chat/new", json={"message": "hello", "provider": "sandbox"}).json()
    b_job = b.post("/api/v1/images/generate", json={"prompt": "b's boat"}).json()["jobId"]
    batch_id = batch["batchId"]

    # a sees its own
    assert a.get(f"/api/v1/images/status/{job}").status_code == 200
    assert a.get(f"/api/v1/batches/{batch_id}").status_code == 200
    a_list = {j["id"] for j in a.get("/api/v1/jobs", params={"limit": 100}).json()["jobs"]}
    assert a_list == {job, chat["jobId"], *batch["jobIds"]}

    # b finds none of it, as if it did not exist
    for reply, code in [
        (b.get(f"/api/v1/images/status/{job}"), "JOB_NOT_FOUND"),
        (b.get(f"/api/v1/images/status/{chat['jobId']}"), "JOB_NOT_FOUND"),
        (b.post(f"/api/v1/jobs/{job}/cancel"), "JOB_NOT_FOUND"),
        (b.get(f"/api/v1/batches/{batch_id}"), "NOT_FOUND"),
        (b.post(f"/api/v1/batches/{batch_id}/cancel"), "NOT_FOUND"),
        (b.get("/api/v1/jobs", params={"batchId": batch_id}), "NOT_FOUND"),
        (b.post(f"/api/v1/chat/{chat['chatId']}/messages", json={"message": "hi"}), "NOT_FOUND"),
    ]:
        assert reply.status_code == 404, reply.text
        assert code_of(reply) == code
    b_list = [j["id"] for j in b.get("/api/v1/jobs", params={"limit": 100}).json()["jobs"]]
    assert b_list == [b_job]
    # nothing of a's changed
    assert a.get(f"/api/v1/images/status/{job}").json()["status"] == "queued"
    summary = a.get(f"/api/v1/batches/{batch_id}").json()
    assert summary["counts"]["queued"] == 2


def test_images_are_under_their_tenant_and_only_it_reads_them(
    client: httpx.Client, as_key: Any, api_settings: Settings
) -> None:
    a_tenant, b_tenant = new_tenant(), new_tenant()
    a = as_key(make_key(client, a_tenant)["key"])
    b = as_key(make_key(client, b_tenant)["key"])
    png = b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes
    stored = asyncio.run(storage_from_settings(api_settings).put(a_tenant, png, "image/png"))
    # content-addressed under the tenant's prefix
    assert stored.key == f"{a_tenant}/{hashlib.sha256(png).hexdigest()}.png"
    assert a.get(f"/api/v1/images/{stored.key}").content == png
    mine = b.get(f"/api/v1/images/{stored.key}")
    assert mine.status_code == 404 and code_of(mine) == "IMAGE_NOT_FOUND"
    # the same bytes under b's own prefix are not a's image either
    same = b.get(f"/api/v1/images/{b_tenant}/{stored.sha256}.png")
    assert same.status_code == 404


def test_scopes_are_enforced_on_every_route(client: httpx.Client, as_key: Any) -> None:
    tenant = new_tenant()
    reader = as_key(make_key(client, tenant, scopes=["jobs:read"])["key"])
    writer = as_key(make_key(client, tenant, scopes=["jobs:write"])["key"])
    job = writer.post("/api/v1/images/generate", json={"prompt": "scoped"})
    assert job.status_code == 202
    job_id = job.json()["jobId"]

    refused = reader.post("/api/v1/images/generate", json={"prompt": "not allowed"})
    assert refused.status_code == 403 and code_of(refused) == "FORBIDDEN"
    assert "jobs:write" in refused.json()["error"]["message"]
    for reply in [
        reader.post("/api/v1/images/batch", json={"prompts": ["x"]}),
        reader.post("/api/v1/chat/new", json={"message": "x", "provider": "sandbox"}),
        reader.post(f"/api/v1/jobs/{job_id}/cancel"),
    ]:
        assert reply.status_code == 403, reply.text
    assert reader.get(f"/api/v1/images/status/{job_id}").status_code == 200
    assert reader.get("/api/v1/jobs").status_code == 200

    for reply in [writer.get(f"/api/v1/images/status/{job_id}"), writer.get("/api/v1/jobs")]:
        assert reply.status_code == 403 and "jobs:read" in reply.json()["error"]["message"]
    # admin routes and the fleet (every tenant's running jobs) take the admin scope
    for reply in [
        reader.get("/api/v1/admin/keys"),
        reader.post("/api/v1/admin/keys", json={"tenant": tenant}),
        reader.get("/api/v1/fleet"),
    ]:
        assert reply.status_code == 403 and "admin" in reply.json()["error"]["message"]
    admin = as_key(make_key(client, new_tenant(), scopes=["admin"])["key"])
    assert admin.get("/api/v1/admin/keys").status_code == 200
    assert admin.get("/api/v1/fleet").status_code == 200


def test_a_revoked_key_is_refused_within_a_second(client: httpx.Client, as_key: Any) -> None:
    created = make_key(client, new_tenant())
    caller = as_key(created["key"])
    assert caller.get("/api/v1/jobs").status_code == 200  # now in the controller's cache
    revoked = client.delete(f"/api/v1/admin/keys/{created['prefix']}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is True and revoked.json()["revokedAt"] is not None
    since = time.monotonic()
    while (reply := caller.get("/api/v1/jobs")).status_code == 200:
        assert time.monotonic() - since < 1.0, "a revoked key still works after a second"
        time.sleep(0.02)
    assert reply.status_code == 401 and code_of(reply) == "UNAUTHORIZED"
    assert created["prefix"] in reply.json()["error"]["message"]
    listed = client.get("/api/v1/admin/keys", params={"tenant": created["tenant"]}).json()
    assert listed["keys"][0]["revoked"] is True
    # revoking again changes nothing; an unknown prefix is missing
    again = client.delete(f"/api/v1/admin/keys/{created['prefix']}")
    assert again.json()["revokedAt"] == revoked.json()["revokedAt"]
    assert client.delete("/api/v1/admin/keys/sk_00000000").status_code == 404


def test_unknown_and_missing_keys_are_401(as_key: Any, anon: httpx.Client) -> None:
    reply = as_key("sk_" + "z" * 40).get("/api/v1/jobs")
    assert reply.status_code == 401 and reply.json()["error"]["message"] == "unknown API key"
    assert anon.get("/api/v1/jobs").status_code == 401


def test_a_tenants_plan_and_webhook_url_change_and_its_secret_rotates(
    client: httpx.Client, redis_url: str
) -> None:
    tenant = new_tenant()
    first = make_key(client, tenant)["webhookSecret"]
    changed = client.put(
        f"/api/v1/admin/tenants/{tenant}",
        json={"plan": "partner", "webhookUrl": "https://hooks.example/semantest"},
    )
    assert changed.status_code == 200
    assert changed.json() == {
        "name": tenant,
        "plan": "partner",
        "webhookUrl": "https://hooks.example/semantest",
        "createdAt": changed.json()["createdAt"],
    }
    # a field left out is kept; null clears the URL
    kept = client.put(f"/api/v1/admin/tenants/{tenant}", json={"webhookUrl": None}).json()
    assert kept["plan"] == "partner" and kept["webhookUrl"] is None
    shown = client.get(f"/api/v1/admin/tenants/{tenant}")
    assert shown.status_code == 200 and first not in shown.text
    assert "webhookSecret" not in shown.json()

    rotated = client.post(f"/api/v1/admin/tenants/{tenant}/webhook-secret")
    assert rotated.status_code == 200
    secret = rotated.json()["webhookSecret"]
    assert secret.startswith("whsec_") and secret != first
    stored = redis.Redis.from_url(redis_url).get(keys.tenant(tenant))
    assert stored is not None and secret.encode() in stored and first.encode() not in stored

    missing = new_tenant()
    assert client.put(f"/api/v1/admin/tenants/{missing}", json={}).status_code == 404
    assert client.post(f"/api/v1/admin/tenants/{missing}/webhook-secret").status_code == 404
    bad = client.put(f"/api/v1/admin/tenants/{tenant}", json={"plan": "gold"})
    assert bad.status_code == 422


def test_the_admin_tenant_exists_on_the_partner_plan(client: httpx.Client) -> None:
    assert client.get("/api/v1/jobs").status_code == 200  # the bootstrap key, first use
    admin = client.get("/api/v1/admin/tenants/admin")
    assert admin.status_code == 200 and admin.json()["plan"] == Plan.PARTNER.value
    # a key for the admin tenant does not make it anew: no secret in the answer
    assert "webhookSecret" not in make_key(client, "admin", scopes=["jobs:read"])
