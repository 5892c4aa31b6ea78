"""Batches, cancel, job lists, idempotency, lane capacity, atomic submission and the result cache.

Real HTTP against a real controller and redis-server; no agent runs here, so jobs stay queued
(end-to-end runs with agents are in tests/e2e/test_client_api_e2e.py). Each controller here has
its own Redis database, so counts and lists are exactly this module's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import redis
from pydantic import SecretStr
from redis.asyncio import Redis as AsyncRedis
from rq.job import Job

from agents.worker import CLAIM_ARGS, CLAIM_LUA, claim_keys
from controller.submission import Submitter
from semantest import keys
from semantest.config import Settings
from semantest.errors import Conflict
from semantest.models import JobRecord
from semantest.stack import free_port
from tests.conftest import ADMIN_KEY, serve_controller

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def settings_on(redis_url: str, db: int, tmp: object, **extra: object) -> Settings:
    base = redis_url.rsplit("/", 1)[0]
    return Settings(
        redis_url=f"{base}/{db}",
        admin_key=SecretStr(ADMIN_KEY),
        port=free_port(),
        data_dir=tmp,  # type: ignore[arg-type]
        chromium=None,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def own(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = settings_on(redis_url, 20, tmp_path_factory.mktemp("own"))
    redis.Redis.from_url(settings.redis_url or "").flushdb()
    with serve_controller(settings):
        yield settings


@pytest.fixture
def api(own: Settings) -> Iterator[httpx.Client]:
    redis.Redis.from_url(own.redis_url or "").flushdb()
    with httpx.Client(base_url=own.controller_url, headers=AUTH, timeout=10) as c:
        yield c


@pytest.fixture
def r(own: Settings) -> redis.Redis:
    return redis.Redis.from_url(own.redis_url or "")


def code_of(reply: httpx.Response) -> str:
    return str(reply.json()["error"]["code"])


@pytest.mark.parametrize("n", [0, 101])
def test_batch_size_outside_1_to_100_is_422_naming_prompts(api: httpx.Client, n: int) -> None:
    reply = api.post("/api/v1/images/batch", json={"prompts": [f"p{i}" for i in range(n)]})
    assert reply.status_code == 422 and code_of(reply) == "VALIDATION_ERROR"
    assert "prompts" in [d["field"] for d in reply.json()["error"]["details"]]


@pytest.mark.parametrize("path", ["/api/v1/images/batch", "/api/v1/batch/generate"])
def test_batch_queues_each_prompt_with_its_options(
    api: httpx.Client, r: redis.Redis, path: str
) -> None:
    body = {
        "prompts": ["a cat", {"prompt": "a dog", "options": {"count": 2}}],
        "options": {"style": "ink"},
        "priority": "high",
    }
    reply = api.post(path, json=body)
    assert reply.status_code == 202, reply.text
    accepted = reply.json()
    assert set(accepted) == {"batchId", "jobIds", "statusUrl"} and len(accepted["jobIds"]) == 2
    summary = api.get(accepted["statusUrl"]).json()
    assert summary["total"] == 2 and summary["counts"]["queued"] == 2
    assert summary["status"] == "queued" and summary["progress"] == 0 and not summary["done"]
    cat, dog = summary["jobs"]
    assert cat["options"]["style"] == "ink" and cat["priority"] == "high"
    assert dog["options"] == {**dog["options"], "count": 2, "style": None}
    assert cat["batchId"] == dog["batchId"] == accepted["batchId"]
    # both wait in the admin tenant's high lane, in order
    assert r.lrange(keys.fair_queue("sandbox", "high", "admin"), 0, -1) == [
        i.encode() for i in accepted["jobIds"]
    ]
    assert int(r.get(keys.lane_depth("sandbox", "high")) or 0) == 2


def test_identical_prompts_in_a_batch_run_once(api: httpx.Client, r: redis.Redis) -> None:
    reply = api.post("/api/v1/images/batch", json={"prompts": ["same", "other", "same", "same"]})
    ids = reply.json()["jobIds"]
    records = [api.get(f"/api/v1/images/status/{i}").json() for i in ids]
    assert [rec["sameAs"] for rec in records] == [None, None, ids[0], ids[0]]
    assert r.lrange(keys.fair_queue("sandbox", "normal", "admin"), 0, -1) == [
        ids[0].encode(),
        ids[1].encode(),
    ]
    assert {m.decode() for m in r.smembers(keys.followers(ids[0]))} == {ids[2], ids[3]}


def test_cancel_a_queued_job_and_then_409(api: httpx.Client, r: redis.Redis) -> None:
    ids = [
        api.post("/api/v1/images/generate", json={"prompt": f"c{i}"}).json()["jobId"]
        for i in range(2)
    ]
    reply = api.post(f"/api/v1/jobs/{ids[0]}/cancel")
    assert reply.status_code == 200 and reply.json()["status"] == "canceled"
    assert reply.json()["finishedAt"] is not None
    # off the queue, the depth counter follows, the other job still waits
    assert r.lrange(keys.fair_queue("sandbox", "normal", "admin"), 0, -1) == [ids[1].encode()]
    assert int(r.get(keys.lane_depth("sandbox", "normal")) or 0) == 1
    again = api.post(f"/api/v1/jobs/{ids[0]}/cancel")
    assert again.status_code == 409 and code_of(again) == "CONFLICT"
    assert "canceled" in again.json()["error"]["message"]
    missing = api.post("/api/v1/jobs/nope/cancel")
    assert missing.status_code == 404 and code_of(missing) == "JOB_NOT_FOUND"
    # the last job leaves the queue: the tenant leaves the lane's ring
    api.post(f"/api/v1/jobs/{ids[1]}/cancel")
    assert r.llen(keys.fair_ring("sandbox", "normal")) == 0


def test_canceling_a_leader_hands_its_followers_on(api: httpx.Client, r: redis.Redis) -> None:
    ids = api.post("/api/v1/images/batch", json={"prompts": ["x", "x", "x"]}).json()["jobIds"]
    api.post(f"/api/v1/jobs/{ids[0]}/cancel")
    records = [api.get(f"/api/v1/images/status/{i}").json() for i in ids]
    assert [rec["status"] for rec in records] == ["canceled", "queued", "queued"]
    heir = min(ids[1:])
    other = max(ids[1:])
    assert records[ids.index(heir)]["sameAs"] is None
    assert records[ids.index(other)]["sameAs"] == heir
    assert r.lrange(keys.fair_queue("sandbox", "normal", "admin"), 0, -1) == [heir.encode()]


def test_cancel_a_batch_cancels_what_is_not_final(api: httpx.Client, r: redis.Redis) -> None:
    accepted = api.post("/api/v1/images/batch", json={"prompts": ["a", "b", "a"]}).json()
    summary = api.post(f"/api/v1/batches/{accepted['batchId']}/cancel").json()
    assert summary["counts"]["canceled"] == 3 and summary["done"] and summary["progress"] == 100
    assert summary["status"] == "completed"
    assert r.llen(keys.fair_queue("sandbox", "normal", "admin")) == 0
    assert int(r.get(keys.lane_depth("sandbox", "normal")) or 0) == 0
    assert api.get("/api/v1/batches/unknown").status_code == 404


def test_jobs_list_newest_first_with_cursor_and_filters(api: httpx.Client) -> None:
    ids = [
        api.post("/api/v1/images/generate", json={"prompt": f"l{i}"}).json()["jobId"]
        for i in range(5)
    ]
    batch = api.post("/api/v1/images/batch", json={"prompts": ["b1", "b2", "b3"]}).json()
    api.post(f"/api/v1/jobs/{ids[1]}/cancel")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids + batch["jobIds"]))
    canceled = api.get("/api/v1/jobs", params={"status": "canceled"}).json()
    assert [j["id"] for j in canceled["jobs"]] == [ids[1]] and canceled["nextCursor"] is None
    of_batch = api.get("/api/v1/jobs", params={"batchId": batch["batchId"], "limit": 2}).json()
    assert [j["id"] for j in of_batch["jobs"]] == list(reversed(batch["jobIds"]))[:2]
    rest = api.get(
        "/api/v1/jobs", params={"batchId": batch["batchId"], "cursor": of_batch["nextCursor"]}
    ).json()
    assert [j["id"] for j in rest["jobs"]] == [batch["jobIds"][0]] and rest["nextCursor"] is None
    bad = api.get("/api/v1/jobs", params={"cursor": "!!"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "cursor"


def test_idempotency_key_replays_the_first_answer(api: httpx.Client, r: redis.Redis) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = api.post("/api/v1/images/generate", json={"prompt": "once"}, headers=headers)
    second = api.post("/api/v1/images/generate", json={"prompt": "once"}, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert r.zcard(keys.tenant_jobs("admin")) == 1  # one job, not two
    other = api.post("/api/v1/images/generate", json={"prompt": "twice"}, headers=headers)
    assert other.status_code == 409 and code_of(other) == "CONFLICT"
    assert other.json()["error"]["details"][0]["field"] == "Idempotency-Key"
    # same key on another route is another request
    batch = api.post("/api/v1/images/batch", json={"prompts": ["once"]}, headers=headers)
    assert batch.status_code == 409
    # batches replay too
    h2 = {"Idempotency-Key": "batch-7"}
    b1 = api.post("/api/v1/images/batch", json={"prompts": ["p", "q"]}, headers=h2).json()
    b2 = api.post("/api/v1/images/batch", json={"prompts": ["p", "q"]}, headers=h2).json()
    assert b1 == b2 and r.zcard(keys.tenant_jobs("admin")) == 3
    ttl = r.ttl(keys.idempotency("admin", __import__("hashlib").sha256(b"batch-7").hexdigest()))
    assert 23 * 3600 < ttl <= 24 * 3600
    bad = api.post("/api/v1/images/generate", json={"prompt": "x"}, headers={"Idempotency-Key": ""})
    assert bad.status_code == 422


def test_full_lane_answers_503_with_retry_after(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = settings_on(redis_url, 21, tmp_path_factory.mktemp("cap"), lane_capacity=3)
    client = redis.Redis.from_url(settings.redis_url or "")
    client.flushdb()
    with serve_controller(settings) as url, httpx.Client(base_url=url, headers=AUTH) as api:
        two = api.post("/api/v1/images/batch", json={"prompts": ["a", "b"]})
        assert two.status_code == 202
        too_many = api.post("/api/v1/images/batch", json={"prompts": ["c", "d"]})
        assert too_many.status_code == 503 and code_of(too_many) == "UNAVAILABLE"
        assert int(too_many.headers["retry-after"]) >= 1
        assert "normal" in too_many.json()["error"]["message"]
        # all or nothing: the refused batch left no job behind
        assert client.zcard(keys.tenant_jobs("admin")) == 2
        assert api.post("/api/v1/images/generate", json={"prompt": "c"}).status_code == 202
        assert api.post("/api/v1/images/generate", json={"prompt": "d"}).status_code == 503
        # another lane has its own capacity
        high = api.post("/api/v1/images/generate", json={"prompt": "d", "priority": "high"})
        assert high.status_code == 202


def test_submission_is_all_or_nothing_and_never_overwrites(own: Settings, r: redis.Redis) -> None:
    r.flushdb()

    async def run() -> None:
        client = AsyncRedis.from_url(own.redis_url or "")
        submitter = Submitter(client, own)
        first = JobRecord(tenant="t1", provider="sandbox", prompt="original")
        await submitter.submit([first], {}, tenant="t1")
        fresh = JobRecord(tenant="t1", provider="sandbox", prompt="fresh")
        clash = JobRecord(id=first.id, tenant="t1", provider="sandbox", prompt="overwrite?")
        with pytest.raises(Conflict):
            await submitter.submit([fresh, clash], {}, tenant="t1")
        await client.aclose()
        return None

    asyncio.run(run())
    ids = [m.decode() for m in r.zrange(keys.tenant_jobs("t1"), 0, -1)]
    assert len(ids) == 1  # the fresh job of the refused submission was not written
    stored = JobRecord.from_json(r.get(keys.job(ids[0])) or b"")
    assert stored.prompt == "original"
    assert r.llen(keys.fair_queue("sandbox", "normal", "t1")) == 1
    assert Job.fetch(ids[0], connection=r).get_status() == "queued"


def test_result_cache_answers_without_a_browser(api: httpx.Client, r: redis.Redis) -> None:
    body = {"prompt": "cached cat", "options": {"cache": True}}
    first = api.post("/api/v1/images/generate", json=body).json()
    assert first["status"] == "queued"
    record = JobRecord.model_validate(api.get(first["statusUrl"]).json())
    image = {
        "key": "admin/" + "a" * 64 + ".png",
        "sha256": "a" * 64,
        "width": 8,
        "height": 8,
        "contentType": "image/png",
        "bytes": 10,
    }
    # what an agent's success writes (the e2e test runs it for real)
    r.set(keys.result_cache("admin", record.result_fingerprint()), json.dumps([image]))
    again = api.post("/api/v1/images/generate", json=body).json()
    assert again["status"] == "succeeded"
    cached = api.get(again["statusUrl"]).json()
    assert cached["cached"] is True and cached["images"][0]["sha256"] == "a" * 64
    assert cached["images"][0]["url"].endswith(image["key"])
    assert r.llen(keys.fair_queue("sandbox", "normal", "admin")) == 1  # only the first waits
    # without the opt-in, no cache
    plain = api.post("/api/v1/images/generate", json={"prompt": "cached cat"}).json()
    assert plain["status"] == "queued"


def test_claims_share_a_lane_fairly_between_tenants(own: Settings, r: redis.Redis) -> None:
    """The agents' claim script: a tenant with 10 jobs behind one with 1,000 is served within
    the first 20 claims (every other claim while both wait)."""
    r.flushdb()

    async def submit() -> None:
        client = AsyncRedis.from_url(own.redis_url or "")
        submitter = Submitter(client, own)
        big = [JobRecord(tenant="big", provider="sandbox", prompt=f"b{i}") for i in range(1000)]
        for i in range(0, 1000, 100):
            await submitter.submit(big[i : i + 100], {}, tenant="big")
        small = [JobRecord(tenant="small", provider="sandbox", prompt=f"s{i}") for i in range(10)]
        await submitter.submit(small, {}, tenant="small")
        await client.aclose()

    asyncio.run(submit())
    claim = r.register_script(CLAIM_LUA)
    order = []
    for _ in range(20):
        _queue, job_id = claim(keys=claim_keys("w", "sandbox"), args=CLAIM_ARGS)
        order.append(JobRecord.from_json(r.get(keys.job(job_id.decode())) or b"").tenant)
    assert order.count("small") == 10, order
    assert int(r.get(keys.lane_depth("sandbox", "normal")) or 0) == 990
    assert r.lrange(keys.fair_ring("sandbox", "normal"), 0, -1) == [b"big"]
