"""Every sandbox prompt token through the whole stack: the job's final status, its error code,
its attempts and retries, and the evidence each failed attempt keeps.

One stack on Redis database 33: one agent with two slots (a logged-out slot parks while the
retry runs on the other), a 5 s job timeout (the shortest allowed) for the hang, two attempts
and a 1 s back-off.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.chat import LOGGED_OUT, REFUSAL
from sandbox.render import ImageSpec, render, render_png
from semantest.stack import Stack
from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import client, job_events, stack_settings, wait_final

pytestmark = pytest.mark.e2e

DB = 33
SEMANTEST = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "semantest")
EVIDENCE = {"screenshot", "dom", "console", "state"}


@pytest.fixture(scope="module")
def token_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = stack_settings(
        redis_url,
        DB,
        tmp_path_factory.mktemp("tokens"),
        slots=2,
        job_timeout_s=5,
        max_attempts=2,
        retry_backoff_s=[1],
    )
    with Stack(settings, agents=1) as running:
        yield running


@pytest.fixture
def api(token_stack: Stack) -> Iterator[httpx.Client]:
    with client(token_stack) as c:
        yield c


def run(api: httpx.Client, prompt: str, timeout: float = 60) -> dict[str, Any]:
    reply = api.post("/api/v1/images/generate", json={"prompt": prompt})
    assert reply.status_code == 202, reply.text
    return wait_final(api, reply.json()["jobId"], timeout=timeout)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def failed_attempt_kept_evidence(api: httpx.Client, record: dict[str, Any], attempt: int) -> None:
    """The attempt's four files are listed, served by URL, and are what they claim to be."""
    listed = api.get(f"/api/v1/jobs/{record['id']}/artifacts").json()["artifacts"]
    mine = {a["name"]: a for a in listed if a["attempt"] == attempt}
    assert set(mine) == EVIDENCE, listed
    shot = api.get(mine["screenshot"]["url"])
    assert shot.status_code == 200 and shot.content[:8] == b"\x89PNG\r\n\x1a\n"
    state = api.get(mine["state"]["url"]).json()
    assert state["error"]["code"] == record["attemptHistory"][attempt - 1]["error"]["code"]
    assert state["addon"]["addonId"] == "sandbox"


def test_refuse_fails_at_once_with_content_refused(api: httpx.Client) -> None:
    record = run(api, f"a refused boat {uuid.uuid4().hex[:6]} [sandbox:refuse]")
    assert record["status"] == "failed" and record["attempts"] == 1
    assert record["error"] == {"code": "CONTENT_REFUSED", "message": REFUSAL, "retryable": False}
    assert "retrying" not in record["_seen"]
    assert [h["error"]["code"] for h in record["attemptHistory"]] == ["CONTENT_REFUSED"]
    # evidence as URLs, never server paths
    assert all(u.startswith("http") for u in record["artifacts"].values())
    failed_attempt_kept_evidence(api, record, 1)
    dom = api.get(record["artifacts"]["dom"]).text
    assert "content policy" in dom and 'data-error="refused"' in dom


def test_ratelimit_retries_after_the_notices_wait(api: httpx.Client, token_stack: Stack) -> None:
    prompt = f"a rate-limited cat {uuid.uuid4().hex[:6]} [sandbox:ratelimit=3]"
    record = run(api, prompt)
    assert record["status"] == "succeeded" and record["attempts"] == 2
    assert "retrying" in record["_seen"]
    (first,) = record["attemptHistory"]
    assert first["error"]["code"] == "PROVIDER_RATE_LIMITED" and first["error"]["retryable"]
    assert "try again in 3 seconds" in first["error"]["message"]
    events = job_events(token_stack, record["id"])
    failed_at = next(e["at"] for e in events if e["status"] == "retrying")
    rerun_at = next(e["at"] for e in events if e["status"] == "leased" and e["at"] > failed_at)
    assert rerun_at - failed_at >= 3.0  # the notice's 3 s, not the 1 s back-off
    (image,) = record["images"]
    assert image["sha256"] == sha(render_png(prompt))


def test_logout_parks_the_slot_and_retries_on_another(
    api: httpx.Client, token_stack: Stack
) -> None:
    prompt = f"a logged-out dog {uuid.uuid4().hex[:6]} [sandbox:logout]"
    record = run(api, prompt)
    assert record["status"] == "succeeded" and record["attempts"] == 2
    (first,) = record["attemptHistory"]
    assert first["error"] == {
        "code": "PROVIDER_LOGGED_OUT",
        "message": LOGGED_OUT,
        "retryable": True,
    }
    assert first["agent"] != record["agent"]  # the retry ran on the other slot
    fleet = api.get("/api/v1/fleet").json()
    slots = {s["name"]: s for a in fleet["agents"] for s in a["slots"]}
    assert slots[first["agent"]]["parkedReason"] == "logged-out"  # parked for 60 s
    assert slots[record["agent"]]["parkedReason"] != "logged-out"
    (image,) = record["images"]
    assert image["sha256"] == sha(render_png(prompt))


def test_slow_reply_succeeds_with_progress(api: httpx.Client, token_stack: Stack) -> None:
    prompt = f"a slow snail {uuid.uuid4().hex[:6]} [sandbox:slow=2000]"
    started = time.monotonic()
    record = run(api, prompt)
    assert time.monotonic() - started >= 2.0
    assert record["status"] == "succeeded" and record["attempts"] == 1
    stages = [e["stage"] for e in job_events(token_stack, record["id"])]
    assert "waiting" in stages and stages[-1] == "done"
    assert record["images"][0]["sha256"] == sha(render_png(prompt))


def test_images_three_stores_three_images(api: httpx.Client) -> None:
    prompt = f"three fruits {uuid.uuid4().hex[:6]} [sandbox:images=3]"
    record = run(api, prompt)
    assert record["status"] == "succeeded"
    wanted = [sha(render(ImageSpec(prompt, 512, 512, n, None, None))) for n in range(3)]
    assert [i["sha256"] for i in record["images"]] == wanted
    for image in record["images"]:
        assert sha(api.get(image["url"]).content) == image["sha256"]


def test_broken_image_fails_with_generation_failed(api: httpx.Client) -> None:
    record = run(api, f"a broken vase {uuid.uuid4().hex[:6]} [sandbox:broken]")
    assert record["status"] == "failed" and record["attempts"] == 1
    assert record["error"]["code"] == "GENERATION_FAILED"
    assert record["error"]["retryable"] is False and "broken image" in record["error"]["message"]
    failed_attempt_kept_evidence(api, record, 1)


def test_hang_times_out_each_attempt_and_fails_with_timeout(
    api: httpx.Client, token_stack: Stack
) -> None:
    record = run(api, f"a hanging lamp {uuid.uuid4().hex[:6]} [sandbox:hang]", timeout=40)
    assert record["status"] == "failed" and record["attempts"] == 2
    assert record["error"]["code"] == "TIMEOUT" and record["error"]["retryable"] is False
    assert [h["error"]["code"] for h in record["attemptHistory"]] == ["TIMEOUT", "TIMEOUT"]
    assert "retrying" in record["_seen"]
    for attempt in (1, 2):
        failed_attempt_kept_evidence(api, record, attempt)
    listed = api.get(f"/api/v1/jobs/{record['id']}/artifacts").json()["artifacts"]
    assert not any(Path(a["url"]).is_absolute() and a["url"].startswith("/") for a in listed)


def test_another_tenant_sees_no_artifacts(api: httpx.Client, token_stack: Stack) -> None:
    record = run(api, f"refused for others {uuid.uuid4().hex[:6]} [sandbox:refuse]")
    created = api.post("/api/v1/admin/keys", json={"tenant": f"t{uuid.uuid4().hex[:8]}"})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    with httpx.Client(
        base_url=token_stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as other:
        listed = other.get(f"/api/v1/jobs/{record['id']}/artifacts")
        assert listed.status_code == 404 and listed.json()["error"]["code"] == "JOB_NOT_FOUND"
        one = other.get(record["artifacts"]["screenshot"])
        assert one.status_code == 404
    assert api.get(record["artifacts"]["screenshot"]).status_code == 200


def test_status_artifacts_downloads_the_evidence(
    api: httpx.Client, token_stack: Stack, tmp_path: Path
) -> None:
    record = run(api, f"cli evidence {uuid.uuid4().hex[:6]} [sandbox:refuse]")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMANTEST_")}
    env |= {"SEMANTEST_URL": token_stack.url, "SEMANTEST_API_KEY": ADMIN_KEY, "NO_COLOR": "1"}
    done = subprocess.run(
        [SEMANTEST, "status", record["id"], "--artifacts", "--out", str(tmp_path), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "CONTENT_REFUSED"
    folder = tmp_path / record["id"] / "1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "console.log",
        "dom.html",
        "screenshot.png",
        "state.json",
    ]
    served = api.get(record["artifacts"]["screenshot"]).content
    assert (folder / "screenshot.png").read_bytes() == served
    assert sha(served) == sha((folder / "screenshot.png").read_bytes())
    assert json.loads((folder / "state.json").read_text())["error"]["code"] == "CONTENT_REFUSED"
