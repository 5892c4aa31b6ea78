"""Keys never reach a log: after real work on the shared stack, no log file, no audit entry and
no job record holds the API key."""

from __future__ import annotations

import httpx
import pytest
import redis

from semantest import keys
from semantest.stack import Stack
from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import submit, wait_final

pytestmark = pytest.mark.e2e


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
