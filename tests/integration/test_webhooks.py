"""Webhook delivery with real parts: a real controller and redis-server, the real webhook worker
process (`python -m semantest.webhook_worker`) and a real HTTP receiver on loopback that checks
every signature with the `standardwebhooks` package. No agent runs: jobs end through `JobStore`,
as an agent's attempt (or the reaper, or a cancel) ends them.

Database 46 runs with private targets allowed (the receiver is on loopback); database 47 has a
worker with them refused, where only 127.0.0.1/32 is opened, to watch the guard at each hop.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from pydantic import SecretStr
from redis.asyncio import Redis
from rq.job import Job
from rq.job import JobStatus as RQStatus

from semantest.config import Settings
from semantest.jobstore import JobStore, StaleLease, TerminalRecord
from semantest.models import ImageRecord, JobError, JobRecord, JobStatus, Stage, WebhookTarget
from semantest.stack import free_port
from semantest.tenants import new_webhook_secret
from semantest.webhook_events import announce_final
from tests.conftest import ADMIN_KEY, serve_controller
from tests.webhook_receiver import Plan, Receiver, event_types, webhook_worker

pytestmark = pytest.mark.integration
SECRET = new_webhook_secret()
SHA = "ab" * 32


def hook_settings(redis_url: str, db: int, data_dir: Path, **extra: object) -> Settings:
    values: dict[str, object] = {
        "redis_url": f"{redis_url.rsplit('/', 1)[0]}/{db}",
        "admin_key": SecretStr(ADMIN_KEY),
        "port": free_port(),
        "data_dir": data_dir,
        "chromium": None,
        "webhook_secret": SecretStr(SECRET),
        "webhook_allow_private": True,
        "webhook_backoff_s": 2,
        "webhook_max_attempts": 3,
        "webhook_timeout_s": 1.5,
    }
    return Settings(**(values | extra))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def hooks(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Controller and webhook worker on database 46, private targets allowed."""
    settings = hook_settings(redis_url, 46, tmp_path_factory.mktemp("hooks"))
    redis.Redis.from_url(settings.redis_url or "").flushdb()
    with serve_controller(settings), webhook_worker(settings, settings.data_dir / "worker.log"):
        yield settings


@pytest.fixture(scope="module")
def strict(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A webhook worker on database 47 with private targets refused but 127.0.0.1/32."""
    settings = hook_settings(
        redis_url,
        47,
        tmp_path_factory.mktemp("strict"),
        webhook_allow_private=False,
        webhook_allow_networks=["127.0.0.1/32"],
    )
    redis.Redis.from_url(settings.redis_url or "").flushdb()
    with webhook_worker(settings, settings.data_dir / "worker.log"):
        yield settings


@pytest.fixture
async def api(hooks: Settings) -> AsyncIterator[httpx.AsyncClient]:
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=hooks.controller_url, headers=auth, timeout=10) as c:
        yield c


@pytest.fixture
async def store(hooks: Settings) -> AsyncIterator[JobStore]:
    client = Redis.from_url(hooks.redis_url or "")
    yield JobStore(client)
    await client.aclose()


def path() -> str:
    return f"/hook/{uuid.uuid4().hex[:8]}"


async def run(store: JobStore, job_id: str, lease: str = "agent-1/0@b#1") -> None:
    """Take the job as an agent's attempt does (lease, running)."""

    def take(r: JobRecord) -> None:
        r.status, r.lease, r.attempts, r.agent = JobStatus.RUNNING, lease, r.attempts + 1, "a/0"

    await store.update(job_id, take)


def succeed(r: JobRecord) -> None:
    r.status, r.progress, r.stage, r.finished_at = JobStatus.SUCCEEDED, 100, Stage.DONE, 1.0
    r.images = [
        ImageRecord(
            key=f"{r.tenant}/{SHA}.png",
            sha256=SHA,
            width=8,
            height=8,
            content_type="image/png",
            bytes=100,
        )
    ]


def rq_status_once_settled(settings: Settings, rq_id: str) -> RQStatus | None:
    """RQ's status of a delivery job once it is failed or finished (or after 5 s)."""
    rq_job = Job.fetch(rq_id, connection=redis.Redis.from_url(settings.redis_url or ""))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status = rq_job.get_status()
        if status in (RQStatus.FAILED, RQStatus.FINISHED):
            return status
        time.sleep(0.05)
    return rq_job.get_status()


async def submit(api: httpx.AsyncClient, url: str) -> str:
    reply = await api.post("/api/v1/images/generate", json={"prompt": "p", "webhook": {"url": url}})
    assert reply.status_code == 202, reply.text
    return str(reply.json()["jobId"])


async def test_a_succeeded_job_posts_one_signed_event_with_its_record(
    api: httpx.AsyncClient, store: JobStore, receiver: Receiver
) -> None:
    where = path()
    job_id = await submit(api, receiver.url(where))
    await run(store, job_id)
    await store.update(job_id, succeed, lease="agent-1/0@b#1")
    [got] = receiver.wait(where, 1)
    payload = got.verified(SECRET)
    assert got.headers["webhook-id"] == f"evt_{job_id}_succeeded"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 10
    assert payload["type"] == "job.succeeded"
    # epoch seconds, as every timestamp in the API's JSON
    assert isinstance(payload["timestamp"], float) and payload["timestamp"] <= time.time()
    assert payload["timestamp"] == pytest.approx(time.time(), abs=10)
    data = payload["data"]
    assert (data["id"], data["status"], data["webhook"]) == (
        job_id,
        "succeeded",
        {"url": receiver.url(where)},
    )
    image = data["images"][0]
    assert image["sha256"] == SHA
    assert image["url"] == f"{str(api.base_url).rstrip('/')}/api/v1/images/admin/{SHA}.png"
    with pytest.raises(Exception, match="No matching signature"):
        got.verified(new_webhook_secret())


async def test_failed_attempts_are_retried_with_backoff_and_every_one_is_logged(
    api: httpx.AsyncClient, store: JobStore, receiver: Receiver
) -> None:
    where = path()
    receiver.plan(where, Plan(500), Plan(503, delay_s=3.0), Plan(200))
    job_id = await submit(api, receiver.url(where))
    await run(store, job_id)
    await store.update(job_id, succeed, lease="agent-1/0@b#1")
    got = receiver.wait(where, 3, timeout=20)
    assert {r.headers["webhook-id"] for r in got} == {f"evt_{job_id}_succeeded"}
    for r in got:  # each attempt is signed again, with its own timestamp
        r.verified(SECRET)
    # backoff 2 s, then 4 s (after the second attempt's 1.5 s timeout); RQ schedules to the
    # whole second and its scheduler looks once a second, so each wait is within +-1 s of that
    first_wait, second_wait = got[1].at - got[0].at, got[2].at - got[1].at - 1.5
    assert 1.0 <= first_wait <= 3.5
    assert 3.0 <= second_wait <= 5.5
    await asyncio.sleep(0.5)
    page = (await api.get("/api/v1/webhooks/deliveries", params={"jobId": job_id})).json()
    attempts = page["deliveries"]
    assert [a["attempt"] for a in attempts] == [3, 2, 1]
    assert [a["outcome"] for a in attempts] == ["delivered", "retrying", "retrying"]
    assert [a["statusCode"] for a in attempts] == [200, None, 500]
    assert attempts[1]["error"] == "no answer within 1.5 s"
    assert attempts[2]["nextAttemptAt"] == pytest.approx(attempts[2]["at"] + 2, abs=0.5)
    assert attempts[1]["nextAttemptAt"] == pytest.approx(attempts[1]["at"] + 4, abs=0.5)
    assert {a["id"] for a in attempts} == {f"evt_{job_id}_succeeded"}
    assert all(a["type"] == "job.succeeded" and a["durationMs"] >= 0 for a in attempts)
    assert (
        await api.get("/api/v1/webhooks/deliveries", params={"jobId": job_id, "limit": 1})
    ).json()["deliveries"] == attempts[:1]


async def test_delivery_gives_up_after_the_last_attempt(
    api: httpx.AsyncClient, store: JobStore, receiver: Receiver, hooks: Settings
) -> None:
    where = path()
    receiver.plan(where, Plan(500), Plan(500), Plan(500), Plan(500))
    job_id = await submit(api, receiver.url(where))
    await run(store, job_id)
    await store.update(job_id, succeed, lease="agent-1/0@b#1")
    receiver.wait(where, 3, timeout=20)
    status = await asyncio.to_thread(rq_status_once_settled, hooks, f"evt_{job_id}_succeeded")
    assert status is RQStatus.FAILED  # RQ agrees: no further attempt
    assert len(receiver.at(where)) == 3
    attempts = (await api.get("/api/v1/webhooks/deliveries", params={"jobId": job_id})).json()
    assert [a["outcome"] for a in attempts["deliveries"]] == ["failed", "retrying", "retrying"]
    assert attempts["deliveries"][0]["nextAttemptAt"] is None


async def test_a_rerun_and_duplicate_final_writes_still_give_one_succeeded_event(
    api: httpx.AsyncClient, store: JobStore, receiver: Receiver
) -> None:
    where = path()
    job_id = await submit(api, receiver.url(where))
    # attempt 1 dies mid-job; the reaper gives the job back; attempt 2 succeeds
    await run(store, job_id, lease="agent-1/0@dead#1")

    def lost(r: JobRecord) -> None:
        r.status, r.lease = JobStatus.RETRYING, None

    await store.update(job_id, lost, lease="agent-1/0@dead#1")
    await run(store, job_id, lease="agent-2/0@b#2")
    # the first attempt was only frozen: it wakes up and tries to record its result, refused
    with pytest.raises(StaleLease):
        await store.update(job_id, succeed, lease="agent-1/0@dead#1")
    await store.update(job_id, succeed, lease="agent-2/0@b#2")
    with pytest.raises(TerminalRecord):  # and once more after the re-run's result
        await store.update(job_id, succeed, lease="agent-1/0@dead#1")
    # a duplicated final write (allowed onto the final record) and a second announcement
    record = await store.update(job_id, succeed, allow_terminal=True)
    await asyncio.gather(*(announce_final(store.redis, record) for _ in range(5)))
    receiver.wait(where, 1)
    await asyncio.sleep(2.0)
    got = receiver.at(where)
    assert [r.headers["webhook-id"] for r in got] == [f"evt_{job_id}_succeeded"]
    attempts = (await api.get("/api/v1/webhooks/deliveries", params={"jobId": job_id})).json()
    assert len(attempts["deliveries"]) == 1


async def test_canceled_and_failed_jobs_post_their_own_events(
    api: httpx.AsyncClient, store: JobStore, receiver: Receiver
) -> None:
    where = path()
    canceled = await submit(api, receiver.url(where))
    assert (await api.post(f"/api/v1/jobs/{canceled}/cancel")).status_code == 200
    failed = await submit(api, receiver.url(where))
    await run(store, failed)

    def fail(r: JobRecord) -> None:
        r.status, r.error = JobStatus.FAILED, JobError(code="GENERATION_FAILED", message="no")

    await store.update(failed, fail, lease="agent-1/0@b#1")
    got = receiver.wait(where, 2)
    by_id = {r.headers["webhook-id"]: r.verified(SECRET) for r in got}
    assert by_id[f"evt_{canceled}_canceled"]["type"] == "job.canceled"
    assert by_id[f"evt_{failed}_failed"]["data"]["error"]["code"] == "GENERATION_FAILED"


async def test_a_batch_posts_each_job_and_batch_completed_once(
    api: httpx.AsyncClient, store: JobStore, receiver: Receiver
) -> None:
    where = path()
    body = {"prompts": ["a", "b", "a"], "webhook": {"url": receiver.url(where)}}
    reply = await api.post("/api/v1/images/batch", json=body)
    assert reply.status_code == 202, reply.text
    batch_id, (first, second, same) = reply.json()["batchId"], reply.json()["jobIds"]
    for job_id in (first, second):
        await run(store, job_id)
    # both end at the same moment; the third follows the first (same prompt)
    await asyncio.gather(
        store.update(first, succeed, lease="agent-1/0@b#1"),
        store.update(second, succeed, lease="agent-1/0@b#1"),
    )
    got = receiver.wait(where, 4)
    await asyncio.sleep(1.5)
    got = receiver.at(where)
    assert sorted(event_types(got)) == ["batch.completed"] + ["job.succeeded"] * 3
    completed = next(r for r in got if json.loads(r.body)["type"] == "batch.completed")
    assert completed.headers["webhook-id"] == f"evt_{batch_id}_completed"
    data = completed.verified(SECRET)["data"]
    assert (data["batchId"], data["status"], data["total"]) == (batch_id, "completed", 3)
    assert data["counts"]["succeeded"] == 3
    assert {j["id"] for j in data["jobs"]} == {first, second, same}
    assert all(j["images"][0]["url"].endswith(f"{SHA}.png") for j in data["jobs"])
    batch_attempts = (
        await api.get("/api/v1/webhooks/deliveries", params={"batchId": batch_id})
    ).json()
    assert len(batch_attempts["deliveries"]) == 4


async def test_a_tenant_default_target_and_its_rotated_secret_through_the_admin_api(
    api: httpx.AsyncClient, hooks: Settings, store: JobStore, receiver: Receiver
) -> None:
    tenant, where = f"acme-{uuid.uuid4().hex[:6]}", path()
    made = await api.post("/api/v1/admin/keys", json={"tenant": tenant})
    assert made.status_code == 201, made.text
    old = made.json()["webhookSecret"]
    changed = await api.put(
        f"/api/v1/admin/tenants/{tenant}", json={"webhookUrl": receiver.url(where)}
    )
    assert changed.status_code == 200, changed.text
    auth = {"Authorization": f"Bearer {made.json()['key']}"}
    acme = httpx.AsyncClient(base_url=hooks.controller_url, headers=auth, timeout=10)

    async def one_job(body: dict[str, object]) -> str:
        reply = await acme.post("/api/v1/images/generate", json={"prompt": "p", **body})
        assert reply.status_code == 202, reply.text
        job_id = str(reply.json()["jobId"])
        await run(store, job_id)
        await store.update(job_id, succeed, lease="agent-1/0@b#1")
        return job_id

    before = await one_job({})
    [got] = receiver.wait(where, 1)
    payload = got.verified(old)
    assert (payload["data"]["id"], payload["data"]["tenant"]) == (before, tenant)
    rotated = await api.post(f"/api/v1/admin/tenants/{tenant}/webhook-secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["webhookSecret"]
    after = await one_job({})
    latest = receiver.wait(where, 2)[1]
    assert latest.verified(new)["data"]["id"] == after
    with pytest.raises(Exception, match="No matching signature"):
        latest.verified(old)
    # a job with a target of its own goes there, not to the default
    other = path()
    await one_job({"webhook": {"url": receiver.url(other)}})
    receiver.wait(other, 1)[0].verified(new)
    assert len(receiver.at(where)) == 2
    # the tenant reads its own deliveries only; a key without jobs:read may not
    mine = (await acme.get("/api/v1/webhooks/deliveries")).json()["deliveries"]
    assert {d["jobId"] for d in mine} == {before, after, mine[0]["jobId"]}
    assert len(mine) == 3
    writer = await api.post("/api/v1/admin/keys", json={"tenant": tenant, "scopes": ["jobs:write"]})
    refused = await api.get(
        "/api/v1/webhooks/deliveries",
        headers={"Authorization": f"Bearer {writer.json()['key']}"},
    )
    assert refused.status_code == 403, refused.text
    assert "jobs:read" in refused.json()["error"]["message"]
    await acme.aclose()


async def test_deliveries_are_the_callers_own(api: httpx.AsyncClient) -> None:
    page = await api.get("/api/v1/webhooks/deliveries", params={"limit": 100})
    mine = page.json()["deliveries"]
    assert mine, "the tests above delivered for the admin tenant"
    assert all(d["id"].startswith("evt_") and d["url"] for d in mine)
    assert {d["type"] for d in mine} >= {"job.succeeded", "job.failed", "batch.completed"}
    too_few = await api.get("/api/v1/webhooks/deliveries", params={"limit": 0})
    assert too_few.status_code == 422
    anon = await api.get("/api/v1/webhooks/deliveries", headers={"Authorization": ""})
    assert anon.status_code == 401


async def test_with_private_targets_refused_every_hop_is_checked(
    strict: Settings, receiver: Receiver
) -> None:
    client = Redis.from_url(strict.redis_url or "")
    store = JobStore(client)
    final, ok, sneaky, meta = path(), path(), path(), path()
    receiver.plan(ok, Plan(307, {"location": receiver.url(final)}))
    receiver.plan(sneaky, Plan(302, {"location": f"http://127.0.0.2:{receiver.port}{final}"}))
    receiver.plan(meta, Plan(308, {"location": "http://169.254.169.254/latest/meta-data/"}))
    targets = [
        receiver.url(ok),
        receiver.url(sneaky),
        receiver.url(meta),
        f"http://[::1]:{receiver.port}{final}",
        f"http://127.0.0.2:{receiver.port}{final}",
    ]
    ids = []
    for url in targets:
        record = JobRecord(tenant="admin", provider="sandbox", prompt="p")
        record.webhook = WebhookTarget(url=url)
        await store.create(record)
        await run(store, record.id)
        await store.update(record.id, succeed, lease="agent-1/0@b#1")
        ids.append(record.id)
    receiver.wait(final, 1)
    await asyncio.sleep(2.5)  # refusals are final: no retry comes
    assert [r.headers["webhook-id"] for r in receiver.at(final)] == [f"evt_{ids[0]}_succeeded"]
    assert len(receiver.at(sneaky)) == len(receiver.at(meta)) == 1
    log = {}
    for raw in await client.lrange("semantest:webhook:deliveries:admin", 0, -1):
        entry = json.loads(raw)
        log.setdefault(entry["jobId"], []).append(entry)
    await client.aclose()
    assert [(e["outcome"], e["finalUrl"]) for e in log[ids[0]]] == [
        ("delivered", receiver.url(final))
    ]
    reasons = [log[i][0]["error"] for i in ids[1:]]
    assert [len(log[i]) for i in ids[1:]] == [1, 1, 1, 1]
    assert all(log[i][0]["outcome"] == "failed" for i in ids[1:])
    assert reasons == [
        "refused: 127.0.0.2 is a loopback address",
        "refused: 169.254.169.254 is a cloud metadata address",
        "refused: ::1 is a loopback address",
        "refused: 127.0.0.2 is a loopback address",
    ]
