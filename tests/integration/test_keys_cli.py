"""`semantest keys create | list | revoke` as a user runs them: a real subprocess with
SEMANTEST_URL and SEMANTEST_API_KEY in its environment, against a real controller and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.integration

SEMANTEST = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "semantest")


def run(url: str, *args: str, key: str = ADMIN_KEY) -> subprocess.CompletedProcess[str]:
    """`semantest keys ARGS` with SEMANTEST_URL and SEMANTEST_API_KEY pointing at `url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMANTEST_")}
    env |= {"SEMANTEST_URL": url, "SEMANTEST_API_KEY": key, "COLUMNS": "200", "NO_COLOR": "1"}
    done = subprocess.run(
        [SEMANTEST, "keys", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def parsed(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def jobs_answer(url: str, key: str) -> int:
    reply = httpx.get(f"{url}/api/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    return reply.status_code


def test_create_list_revoke_end_to_end(controller_url: str) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:10]}"
    made = run(controller_url, "create", "--tenant", tenant, "--plan", "partner")
    assert made.returncode == 0, made.stderr
    shown = dict(
        line.split(None, 1) for line in made.stdout.replace("webhook secret", "secret").splitlines()
    )
    key, secret = shown["key"], shown["secret"]
    assert key.startswith("sk_") and secret.startswith("whsec_")
    assert shown["tenant"] == tenant and shown["plan"] == "partner"
    assert "will not be shown again" in made.stderr
    assert jobs_answer(controller_url, key) == 200

    second = parsed(
        run(
            controller_url,
            "create",
            "--tenant",
            tenant,
            "--scopes",
            "jobs:read,jobs:write",
            "--json",
        )
    )
    assert second["scopes"] == ["jobs:write", "jobs:read"] and "webhookSecret" not in second

    listed = parsed(run(controller_url, "list", "--tenant", tenant, "--json"))["keys"]
    assert [k["prefix"] for k in listed] == [key[:11], second["prefix"]]
    table = run(controller_url, "list", "--tenant", tenant)
    assert table.returncode == 0 and key[:11] in table.stdout and key not in table.stdout
    assert second["key"] not in table.stdout
    header, first_row = table.stdout.splitlines()[:2]
    assert header.split() == ["PREFIX", "TENANT", "PLAN", "CREATED", "STATE", "SCOPES"]
    assert first_row.split()[-4:] == ["active", "jobs:write", "jobs:read", "addons:read"]

    revoked = run(controller_url, "revoke", key[:11])
    assert (
        revoked.returncode == 0
        and revoked.stdout.strip() == f"revoked {key[:11]} (tenant {tenant})"
    )
    deadline = time.monotonic() + 1
    while jobs_answer(controller_url, key) != 401:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    states = {
        k["prefix"]: k["revoked"] for k in parsed(run(controller_url, "list", "--json"))["keys"]
    }
    assert states[key[:11]] is True and states[second["prefix"]] is False


def test_refusals_are_a_message_and_exit_3(controller_url: str) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:10]}"
    reader = parsed(
        run(controller_url, "create", "--tenant", tenant, "--scopes", "jobs:read", "--json")
    )
    # a key without the admin scope
    refused = run(controller_url, "list", key=reader["key"])
    assert refused.returncode == 3 and refused.stdout == ""
    assert "FORBIDDEN" in refused.stderr and "admin" in refused.stderr
    # a field the controller refuses, named
    bad = run(controller_url, "create", "--tenant", tenant, "--scopes", "jobs:delete")
    assert bad.returncode == 3 and "VALIDATION_ERROR" in bad.stderr and "scopes.0" in bad.stderr
    missing = run(controller_url, "revoke", "sk_00000000")
    assert missing.returncode == 3 and "NOT_FOUND" in missing.stderr
    unknown = run(controller_url, "list", key="sk_" + "n" * 40)
    assert unknown.returncode == 3 and "UNAUTHORIZED" in unknown.stderr
    nobody = run("http://127.0.0.1:9", "list")
    assert nobody.returncode == 3 and "cannot reach the controller" in nobody.stderr
