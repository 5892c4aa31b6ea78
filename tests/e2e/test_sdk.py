"""`semantest.Client` and `semantest.AsyncClient` against the real stack (controller, Redis,
an agent with Chromium and the extension, the sandbox provider).

The retry tests run against `ScriptedServer`, a tiny HTTP server on loopback that answers what
each test scripts (503 + Retry-After, then 202; a dropped connection), because a real
controller cannot be told to refuse exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis

import semantest
from sandbox.render import render_png
from semantest.client import ConnectionFailed, ImageMismatch, WaitTimeout
from semantest.errors import (
    Conflict,
    JobNotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from semantest.models import BatchSummary, GenerateAccepted, ImageRecord, JobRecord, JobStatus
from semantest.stack import Stack, free_port
from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import stack_settings

pytestmark = pytest.mark.e2e


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def sdk(stack: Stack) -> Iterator[semantest.Client]:
    with semantest.Client(stack.url, ADMIN_KEY) as client:
        yield client


def test_generate_wait_download_gives_the_sandbox_bytes(sdk: semantest.Client) -> None:
    prompt = f"an sdk lighthouse {uuid.uuid4().hex[:8]}"
    accepted = sdk.generate(prompt, options={"size": "512x512"})
    assert accepted.status is JobStatus.QUEUED and accepted.status_url.endswith(accepted.job_id)
    seen: list[JobStatus] = []
    record = sdk.wait(accepted, timeout=60, on_update=lambda r: seen.append(r.status))
    assert isinstance(record, JobRecord) and record.status is JobStatus.SUCCEEDED, record.error
    assert seen[-1] is JobStatus.SUCCEEDED
    (image,) = record.images
    assert image.sha256 == sha(render_png(prompt))
    assert sha(sdk.download(image)) == image.sha256
    assert sdk.status(accepted.job_id).images == record.images


def test_url_and_key_come_from_the_environment(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEMANTEST_URL", stack.url)
    monkeypatch.setenv("SEMANTEST_API_KEY", ADMIN_KEY)
    with semantest.Client() as client:
        assert client.url == stack.url
        record = client.wait(client.generate("from the environment").job_id, timeout=60)
    assert isinstance(record, JobRecord) and record.status is JobStatus.SUCCEEDED


async def test_async_client_runs_jobs_concurrently(stack: Stack) -> None:
    prompts = [f"async tile {i} {uuid.uuid4().hex[:6]}" for i in range(3)]
    async with semantest.AsyncClient(stack.url, ADMIN_KEY) as client:
        accepted = await asyncio.gather(*(client.generate(p) for p in prompts))
        records = await asyncio.gather(*(client.wait(a, timeout=60) for a in accepted))
        for prompt, record in zip(prompts, records, strict=True):
            assert record.status is JobStatus.SUCCEEDED, record.error
            data = await client.download(record.images[0])
            assert data == render_png(prompt)
        newest = [job.id async for job in client.jobs(limit=3, page_size=2)]
    assert sorted(newest) == sorted(a.job_id for a in accepted)


def test_validation_errors_name_the_field(sdk: semantest.Client) -> None:
    with pytest.raises(ValidationError) as empty:
        sdk.generate("   ")
    assert [d["field"] for d in empty.value.details] == ["prompt"]
    with pytest.raises(ValidationError) as count:
        sdk.generate("four is the most", options={"count": 9})
    assert "options.count" in {d["field"] for d in count.value.details}
    with pytest.raises(ValidationError) as provider:
        sdk.generate("somewhere else", provider="nowhere")
    assert "provider" in {d["field"] for d in provider.value.details}
    assert any(n.startswith("request id: ") for n in provider.value.__notes__)


def test_error_codes_become_their_classes(stack: Stack, sdk: semantest.Client) -> None:
    with semantest.Client(stack.url, "sk_not_a_key") as stranger, pytest.raises(Unauthorized):
        stranger.status("whatever")
    with pytest.raises(JobNotFound):
        sdk.status(uuid.uuid4().hex)
    with pytest.raises(JobNotFound):
        sdk.wait(uuid.uuid4().hex, timeout=5)
    started = time.monotonic()
    with (
        semantest.Client(f"http://127.0.0.1:{free_port()}", ADMIN_KEY, retries=1) as nobody,
        pytest.raises(ConnectionFailed, match="cannot reach the controller"),
    ):
        nobody.status("whatever")
    assert time.monotonic() - started < 5


def test_wait_gives_up_after_its_timeout(sdk: semantest.Client, stack: Stack) -> None:
    httpx.post(f"{stack.settings.sandbox_url}/_sandbox/faults", json={"kind": "hang"})
    accepted = sdk.generate("this one hangs")
    try:
        with pytest.raises(WaitTimeout) as gave_up:
            sdk.wait(accepted, timeout=0.5)
        assert isinstance(gave_up.value.last, JobRecord)
        assert not gave_up.value.last.status.terminal
    finally:
        canceled = sdk.cancel(accepted.job_id)
    assert canceled.status is JobStatus.CANCELED
    after = sdk.wait(sdk.generate("the slot is free again"), timeout=60)
    assert after.status is JobStatus.SUCCEEDED, after.error


# --- batches, listing, cancel, idempotency ---------------------------------------------------


def test_batch_wait_and_list(sdk: semantest.Client) -> None:
    tag = uuid.uuid4().hex[:6]
    prompts: list[Any] = [f"batch fox {tag}", {"prompt": f"batch owl {tag}", "options": {}}]
    prompts.append(f"batch hare {tag}")
    accepted = sdk.batch(prompts, priority="high")
    assert len(accepted.job_ids) == 3
    updates: list[int] = []
    summary = sdk.wait(accepted, timeout=90, on_update=lambda s: updates.append(s.progress))
    assert isinstance(summary, BatchSummary) and summary.done and summary.total == 3
    assert summary.counts.get("succeeded") == 3 and updates[-1] == 100
    by_id = {job.id: job for job in summary.jobs}
    texts = [p if isinstance(p, str) else p["prompt"] for p in prompts]
    for job_id, prompt in zip(accepted.job_ids, texts, strict=True):
        assert by_id[job_id].images[0].sha256 == sha(render_png(prompt))
        assert by_id[job_id].priority.value == "high"
    # the listing walks pages of 2, newest first, and sees exactly this batch's jobs
    listed = list(sdk.jobs(batch_id=accepted.batch_id, page_size=2))
    assert sorted(j.id for j in listed) == sorted(accepted.job_ids)
    assert [j.created_at for j in listed] == sorted((j.created_at for j in listed), reverse=True)
    assert len(list(sdk.jobs(batch_id=accepted.batch_id, limit=1))) == 1
    succeeded = sdk.jobs(batch_id=accepted.batch_id, status=JobStatus.SUCCEEDED)
    assert len(list(succeeded)) == 3
    assert list(sdk.jobs(batch_id=accepted.batch_id, status="failed")) == []
    # an id alone: status and wait find the batch
    assert isinstance(sdk.wait(accepted.batch_id, timeout=5), BatchSummary)


def test_cancel_and_conflict(sdk: semantest.Client) -> None:
    done = sdk.wait(sdk.generate("finished before the cancel"), timeout=60)
    with pytest.raises(Conflict):
        sdk.cancel(done.id)
    accepted = sdk.batch([f"to cancel {i}" for i in range(6)], priority="low")
    summary = sdk.cancel_batch(accepted.batch_id)
    final = sdk.wait(summary, timeout=60)
    assert final.done and final.total == 6
    assert {j.status for j in final.jobs} <= {JobStatus.SUCCEEDED, JobStatus.CANCELED}


def test_idempotency_key_returns_the_first_job(sdk: semantest.Client) -> None:
    key = uuid.uuid4().hex
    first = sdk.generate("only once", idempotency_key=key)
    again = sdk.generate("only once", idempotency_key=key)
    assert again.job_id == first.job_id
    batch = sdk.batch(["once a", "once b"], idempotency_key=key + "-batch")
    assert sdk.batch(["once a", "once b"], idempotency_key=key + "-batch") == batch


@pytest.fixture(scope="module")
def narrow_lane(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A controller whose lanes hold two waiting jobs, and no agent to take them."""
    settings = stack_settings(redis_url, 40, tmp_path_factory.mktemp("narrow"), lane_capacity=2)
    redis.Redis.from_url(settings.redis_url or "").flushdb()
    with Stack(settings, agents=0) as running:
        yield running


def test_a_full_lane_is_waited_out_after_retry_after(narrow_lane: Stack) -> None:
    with semantest.Client(narrow_lane.url, ADMIN_KEY, retries=0) as impatient:
        waiting = [impatient.generate(f"waits {i}") for i in range(2)]
        with pytest.raises(Unavailable) as full:
            impatient.generate("one too many")
    retry_after = full.value.retry_after_s
    assert retry_after >= 1 and "priority" in {d["field"] for d in full.value.details}
    got_in: list[tuple[GenerateAccepted, float]] = []
    with semantest.Client(narrow_lane.url, ADMIN_KEY, retries=2) as patient:
        started = time.monotonic()
        submit = threading.Thread(
            target=lambda: got_in.append((patient.generate("gets in"), time.monotonic()))
        )
        submit.start()
        time.sleep(0.5)
        assert patient.cancel(waiting[0].job_id).status is JobStatus.CANCELED  # one place frees
        submit.join(retry_after * 3)
    ((accepted, at),) = got_in
    assert accepted.status is JobStatus.QUEUED and at - started >= retry_after


# --- retries, against a scripted server -------------------------------------------------------

ACCEPTED = {"jobId": "j1", "status": "queued", "statusUrl": "http://x/api/v1/images/status/j1"}


@dataclass
class ScriptedServer:
    """Answers request n with `script[n]`: (status, headers, JSON or bytes) or "drop" (close
    the connection without answering); records every request's method, path and headers."""

    script: list[Any]
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def __enter__(self) -> ScriptedServer:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                server.requests.append((self.command, self.path, dict(self.headers)))
                step = server.script[min(len(server.requests), len(server.script)) - 1]
                if step == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                status, headers, body = step
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                kind = "image/png" if isinstance(body, bytes) else "application/json"
                self.send_response(status)
                for name, value in {**headers, "Content-Type": kind}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = handle_one

            def log_message(self, *_args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def envelope(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": code.lower(), "details": [], "requestId": "r1"}}


def test_503_is_retried_after_retry_after_with_the_same_idempotency_key() -> None:
    script = [(503, {"Retry-After": "1"}, envelope("UNAVAILABLE")), (202, {}, ACCEPTED)]
    with ScriptedServer(script) as server, semantest.Client(server.url, "k") as client:
        started = time.monotonic()
        accepted = client.generate("patience")
        elapsed = time.monotonic() - started
    assert accepted.job_id == "j1" and 1.0 <= elapsed < 3
    keys = [headers["Idempotency-Key"] for _m, _p, headers in server.requests]
    assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) >= 16


def test_429_retries_are_bounded_and_a_long_wait_is_not_slept() -> None:
    refusal = (429, {"Retry-After": "0"}, envelope("RATE_LIMITED"))
    with ScriptedServer([refusal]) as server, semantest.Client(server.url, retries=2) as client:
        with pytest.raises(RateLimited) as limited:
            client.status("j1")
        assert len(server.requests) == 3 and limited.value.retry_after_s == 0
    long = (503, {"Retry-After": "120"}, envelope("UNAVAILABLE"))
    with ScriptedServer([long]) as server, semantest.Client(server.url) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable) as busy:
            client.generate("later")
        assert time.monotonic() - started < 1 and busy.value.retry_after_s == 120
        assert len(server.requests) == 1


def test_a_dropped_connection_is_retried_only_when_replaying_is_safe() -> None:
    record = JobRecord(id="j1", tenant="t", provider="sandbox", prompt="p").to_json()
    with ScriptedServer(["drop", (200, {}, json.loads(record))]) as server:
        with semantest.Client(server.url) as client:
            assert client.status("j1").id == "j1"  # a read: sent again
        assert len(server.requests) == 2
    with ScriptedServer(["drop", (200, {}, json.loads(record))]) as server:
        with semantest.Client(server.url) as client, pytest.raises(ConnectionFailed):
            client.cancel("j1")  # a cancel that may have gone through: not sent again
        assert len(server.requests) == 1
    with ScriptedServer(["drop", (202, {}, ACCEPTED)]) as server:
        with semantest.Client(server.url) as client:
            assert client.generate("safe to repeat").job_id == "j1"  # idempotency key
        assert len(server.requests) == 2


async def test_async_client_retries_the_same_way() -> None:
    script = [(503, {"Retry-After": "1"}, envelope("UNAVAILABLE")), (202, {}, ACCEPTED)]
    with ScriptedServer(script) as server:
        async with semantest.AsyncClient(server.url, "k") as client:
            started = time.monotonic()
            accepted = await client.generate("patience")
        assert accepted.job_id == "j1" and time.monotonic() - started >= 1.0
    assert len(server.requests) == 2


def test_an_image_off_the_controller_never_sees_the_key() -> None:
    png = render_png("served by a cdn")
    with ScriptedServer([(200, {}, png), (200, {}, b"other bytes")]) as cdn:
        image = ImageRecord(
            url=f"{cdn.url}/admin/{sha(png)}.png",
            key=f"admin/{sha(png)}.png",
            sha256=sha(png),
            width=512,
            height=512,
            content_type="image/png",
            bytes=len(png),
        )
        with semantest.Client(f"http://127.0.0.1:{free_port()}", "sk_secret") as client:
            assert client.download(image) == png
            with pytest.raises(ImageMismatch):
                client.download(image)
    assert all("authorization" not in {h.lower() for h in r[2]} for r in cdn.requests)
