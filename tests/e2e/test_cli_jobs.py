"""`semantest submit | batch | status | wait | cancel` as a user runs them: a real subprocess
against the real stack (controller, Redis, an agent with Chromium, the sandbox provider)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.render import render_png
from semantest.stack import Stack, free_port
from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import Faults

pytestmark = pytest.mark.e2e

SEMANTEST = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "semantest")


def run(
    stack: Stack, *args: str, key: str | None = ADMIN_KEY, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`semantest ARGS` with SEMANTEST_URL and SEMANTEST_API_KEY pointing at `stack`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMANTEST_")}
    env |= {"SEMANTEST_URL": stack.url, "COLUMNS": "200", "NO_COLOR": "1"}
    if key is not None:
        env["SEMANTEST_API_KEY"] = key
    return subprocess.run(
        [SEMANTEST, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


def parsed(done: subprocess.CompletedProcess[str]) -> Any:
    """stdout as the one JSON document `--json` promises."""
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def sha_of(prompt: str) -> str:
    return hashlib.sha256(render_png(prompt)).hexdigest()


def test_submit_wait_json_is_the_finished_record(stack: Stack) -> None:
    prompt = f"a cli kite {uuid.uuid4().hex[:6]}"
    done = run(stack, "submit", prompt, "--wait", "--json", "--priority", "high")
    assert done.returncode == 0, done.stderr
    record = parsed(done)
    assert record["status"] == "succeeded" and record["priority"] == "high"
    assert record["images"][0]["sha256"] == sha_of(prompt)
    served = httpx.get(record["images"][0]["url"], headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert hashlib.sha256(served.content).hexdigest() == sha_of(prompt)


def test_submit_prints_the_id_then_status_and_wait_read_it(stack: Stack) -> None:
    prompt = f"a cli lantern {uuid.uuid4().hex[:6]}"
    submitted = run(stack, "submit", prompt)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert len(job_id.split()) == 1 and job_id
    waited = run(stack, "wait", job_id, "--json")
    assert waited.returncode == 0, waited.stderr
    assert parsed(waited)["images"][0]["sha256"] == sha_of(prompt)
    shown = run(stack, "status", job_id)
    assert shown.returncode == 0 and shown.stdout.startswith("succeeded")
    assert job_id in shown.stdout and sha_of(prompt) in shown.stdout


def test_batch_file_json_prints_the_final_records(stack: Stack, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    prompts = [f"cli batch heron {tag}", f"cli batch otter {tag}", f"cli batch wren {tag}"]
    file = tmp_path / "prompts.txt"
    file.write_text("\n".join([prompts[0], "", prompts[1], "   ", prompts[2], ""]))
    done = run(stack, "batch", str(file), "--json")
    assert done.returncode == 0, done.stderr
    summary = parsed(done)
    assert summary["done"] is True and summary["total"] == 3
    assert summary["counts"]["succeeded"] == 3
    by_prompt = {job["prompt"]: job for job in summary["jobs"]}
    for prompt in prompts:
        assert by_prompt[prompt]["status"] == "succeeded"
        assert by_prompt[prompt]["images"][0]["sha256"] == sha_of(prompt)
    assert f"batch {summary['batchId']}" in done.stderr
    # the same batch by id, human-readable
    shown = run(stack, "status", summary["batchId"])
    assert shown.returncode == 0 and f"batch {summary['batchId']}  100%" in shown.stdout


def test_batch_from_stdin_without_waiting(stack: Stack) -> None:
    done = run(stack, "batch", "-", "--no-wait", "--json", stdin="stdin one\nstdin two\n")
    assert done.returncode == 0, done.stderr
    accepted = parsed(done)
    assert len(accepted["jobIds"]) == 2
    waited = run(stack, "wait", accepted["batchId"], "--json")
    assert waited.returncode == 0, waited.stderr
    assert parsed(waited)["done"] is True
    empty = run(stack, "batch", "-", stdin="\n  \n")
    assert empty.returncode == 2 and "no prompts" in empty.stderr


def test_a_failed_job_exits_1_and_says_why(stack: Stack, faults: Faults) -> None:
    faults.inject("refusal")
    done = run(stack, "submit", "please refuse this", "--wait")
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("failed") and "error" in done.stdout


def test_errors_are_messages_not_tracebacks(stack: Stack) -> None:
    invalid = run(stack, "submit", "too many", "--count", "9")
    assert invalid.returncode == 3
    assert "VALIDATION_ERROR" in invalid.stderr and "options.count" in invalid.stderr
    refused = run(stack, "status", "anything", key="sk_wrong")
    assert refused.returncode == 3
    assert "UNAUTHORIZED" in refused.stderr and "--api-key" in refused.stderr
    missing = run(stack, "status", uuid.uuid4().hex)
    assert missing.returncode == 3 and "no job or batch" in missing.stderr
    down = run(stack, "status", "x", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 3 and "cannot reach the controller" in down.stderr
    for done in (invalid, refused, missing, down):
        assert "Traceback" not in done.stderr and done.stdout == ""


def test_cancel_a_running_job_then_a_finished_one(stack: Stack, faults: Faults) -> None:
    faults.inject("hang")
    job_id = run(stack, "submit", "hangs until canceled").stdout.strip()
    timed_out = run(stack, "wait", job_id, "--timeout", "1")
    assert timed_out.returncode == 124 and "gave up waiting" in timed_out.stderr
    canceled = run(stack, "cancel", job_id, "--json")
    assert canceled.returncode == 0, canceled.stderr
    assert parsed(canceled)["status"] == "canceled"
    again = run(stack, "cancel", job_id)
    assert again.returncode == 3 and "CONFLICT" in again.stderr
