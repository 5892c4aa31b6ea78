"""Logs after real work: no key, webhook secret or token in any of them, and a job followed by
its id from the controller through the agent to the webhook worker.

The first test reads the shared stack. The second runs its own stack (database 56) that has
every kind of secret in play: the bootstrap key, a tenant's key and webhook secret made through
the admin API, the admin tenant's webhook secret, an HS256 JWT and its signing secret; a job
runs with a webhook to a real receiver, and then every log file is searched.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
from pydantic import SecretStr

from semantest import keys
from semantest.stack import Stack
from semantest.tenants import new_webhook_secret
from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import stack_settings, submit, wait_final
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e

DB = 56
ADMIN_WEBHOOK_SECRET = new_webhook_secret()
JWT_SECRET = "jwt-" + uuid.uuid4().hex + uuid.uuid4().hex


def test_the_admin_key_is_in_no_log_and_no_record(api: httpx.Client, stack: Stack) -> None:
    job_id = submit(api, "a quiet log")
    assert wait_final(api, job_id)["status"] == "succeeded"
    api.post("/api/v1/images/generate", json={"prompt": ""})  # a refusal is audited too
    api.get("/api/v1/images/status/nope")
    logs = sorted((stack.settings.data_dir / "logs").glob("*"))
    assert any(p.name.startswith("agent") for p in logs) and any(
        p.name == "audit.jsonl" for p in logs
    )
    for path in logs:
        assert ADMIN_KEY not in path.read_text(errors="replace"), f"key in {path}"
    r = redis.Redis.from_url(stack.settings.redis_url or "")
    audit = b"".join(fields[b"entry"] for _id, fields in r.xrange(keys.AUDIT))
    assert audit and ADMIN_KEY.encode() not in audit
    assert ADMIN_KEY.encode() not in (r.get(keys.job(job_id)) or b"")


@pytest.fixture(scope="module")
def secret_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = stack_settings(
        redis_url,
        DB,
        tmp_path_factory.mktemp("secrets"),
        webhook_secret=SecretStr(ADMIN_WEBHOOK_SECRET),
        webhook_allow_private=True,
        jwt_secret=SecretStr(JWT_SECRET),
        log_level="DEBUG",  # the most a log could ever say
    )
    redis.Redis.from_url(settings.redis_url or "").flushdb()
    with Stack(settings, agents=1) as running:
        yield running


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a file (a stack's own header lines, Chromium's stderr are not)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_a_job_is_followed_by_its_id_and_no_secret_reaches_a_log(secret_stack: Stack) -> None:
    url = secret_stack.url
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    made = httpx.post(
        f"{url}/api/v1/admin/keys",
        json={"tenant": "quiet", "scopes": ["jobs:read", "jobs:write"]},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    tenant_key, tenant_secret = made.json()["key"], made.json()["webhookSecret"]
    token = jwt.encode(
        {"sub": "quiet", "scope": "jobs:read jobs:write", "exp": int(time.time()) + 600},
        JWT_SECRET,
        algorithm="HS256",
    )
    with Receiver() as receiver:
        reply = httpx.post(
            f"{url}/api/v1/images/generate",
            json={"prompt": "a followed lighthouse", "webhook": {"url": receiver.url("/q")}},
            headers={"Authorization": f"Bearer {tenant_key}", "X-Request-ID": "follow-me-1"},
        )
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["jobId"]
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as api:
            assert wait_final(api, job_id)["status"] == "succeeded"
        receiver.wait("/q", 1)
        # refusals carry credentials too: a revoked-looking key, a bad token, a bad secret
        httpx.get(f"{url}/api/v1/jobs", headers={"Authorization": "Bearer sk_" + "z" * 40})
        httpx.get(f"{url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}x"})
        time.sleep(1.5)  # the webhook worker logs its attempt after the receiver answered

    logs = secret_stack.logs_dir
    secrets = {
        "the bootstrap key": ADMIN_KEY,
        "a tenant's key": tenant_key,
        "a tenant's webhook secret": tenant_secret,
        "the admin webhook secret": ADMIN_WEBHOOK_SECRET,
        "a JWT": token,
        "the JWT signing secret": JWT_SECRET,
    }
    files = sorted(logs.glob("*"))
    assert {p.name for p in files} >= {"controller.log", "agents.log", "webhooks.log"}
    for path in files:
        text = path.read_text(errors="replace")
        for what, secret in secrets.items():
            assert secret not in text, f"{what} is in {path.name}"

    # the job's whole path, by its id
    def about(name: str) -> list[dict[str, Any]]:
        return [e for e in json_lines(logs / name) if job_id in json.dumps(e)]

    accepted = [e for e in about("controller.log") if e.get("job_id") == job_id]
    assert accepted and accepted[0]["role"] == "controller"
    assert accepted[0]["request_id"] == "follow-me-1"
    ran = about("agents.log")
    attempt = [e for e in ran if "attempt 1" in e["message"] and e.get("job_id") == job_id]
    assert attempt, ran
    assert {(e["role"], e["agent"], e["slot"]) for e in attempt} == {("agent", "agent-1", 0)}
    assert any(e["message"].endswith(": succeeded") for e in attempt)
    delivered = [e for e in about("webhooks.log") if e.get("job_id") == job_id]
    assert delivered and delivered[0]["role"] == "webhooks"
    # every line of our processes is JSON with the common fields
    for name in ("controller.log", "webhooks.log"):
        for entry in json_lines(logs / name):
            assert {"time", "level", "role", "logger", "message"} <= set(entry), entry
