"""Rate limits: exact under concurrency, per tenant, plans, headers on every limited answer.

Real HTTP against real controllers, each on its own Redis database (emptied first) with low
limits set through `SEMANTEST_RATE_LIMIT_PLANS`, so the buckets here are this module's alone;
tenants and their plans are made with real keys through the admin API. Limits counted per hour
keep "exactly N through" exact: nothing refills during a test. The last tests call the
limiter's script directly (200 checks at once, the partner burst, no partial consumption).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import SecretStr
from redis.asyncio import Redis as AsyncRedis

from controller.app import create_app
from controller.auth import Caller
from controller.ratelimit import LimitedRoute, RateLimit, RateLimiter
from semantest import keys
from semantest.config import Settings
from semantest.plans import (
    PARTNER,
    PLANS,
    STANDARD,
    Endpoint,
    Limit,
    Plan,
    PlanSpec,
    resolve_plans,
)
from semantest.stack import free_port
from tests.conftest import ADMIN_KEY, serve_controller

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
GENERATE = "/api/v1/images/generate"
BODY = {"prompt": "a lighthouse at dawn", "provider": "sandbox"}
HOUR = 3600
#: Databases of this module's controllers (test suites give each stack its own).
DB = 57


def db_url(redis_url: str, db: int = DB) -> str:
    return f"{redis_url.rsplit('/', 1)[0]}/{db}"


@contextlib.contextmanager
def controller(
    redis_url: str, tmp: Any, plans: dict[str, Any] | None = None, **extra: Any
) -> Iterator[str]:
    """A controller on this module's (emptied) database, with `plans` as its plan changes."""
    url = db_url(redis_url)
    redis.Redis.from_url(url).flushdb()
    settings = Settings(
        redis_url=url,
        admin_key=SecretStr(ADMIN_KEY),
        port=free_port(),
        data_dir=tmp,
        chromium=None,
        rate_limit_plans={k: PlanSpec.model_validate(v) for k, v in (plans or {}).items()},
        **extra,
    )
    with serve_controller(settings) as base:
        yield base


def limits(reply: httpx.Response) -> tuple[int, int, int]:
    """RateLimit-Limit, -Remaining, -Reset of an answer."""
    h = reply.headers
    return int(h["ratelimit-limit"]), int(h["ratelimit-remaining"]), int(h["ratelimit-reset"])


async def fire(
    base: str, n: int, method: str, path: str, key: str = ADMIN_KEY, **kw: Any
) -> list[httpx.Response]:
    """`n` requests at once with `key`, each on its own connection."""
    pool = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30, limits=pool) as c:
        return list(await asyncio.gather(*(c.request(method, path, **kw) for _ in range(n))))


def new_key(base: str, plan: str) -> tuple[str, str]:
    """A new tenant on `plan` and its key, made through the admin API: (tenant, key)."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    reply = httpx.post(
        f"{base}/api/v1/admin/keys", headers=AUTH, json={"tenant": tenant, "plan": plan}
    )
    assert reply.status_code == 201, reply.text
    return tenant, str(reply.json()["key"])


def accepted(replies: list[httpx.Response]) -> int:
    return sum(r.status_code == 202 for r in replies)


def test_200_parallel_submissions_let_exactly_the_limit_through(
    redis_url: str, tmp_path: Any
) -> None:
    plans = {"partner": {"endpoints": {"images.generate": {"count": 20, "period_s": HOUR}}}}
    with controller(redis_url, tmp_path, plans) as base:
        started = time.monotonic()
        replies = asyncio.run(fire(base, 200, "POST", GENERATE, json=BODY))
        took = math.ceil(time.monotonic() - started) + 1
        by_status = Counter(r.status_code for r in replies)
        assert by_status == {202: 20, 429: 180}, by_status
        accepted = [r for r in replies if r.status_code == 202]
        refused = [r for r in replies if r.status_code == 429]
        # each accepted request saw its own place in the bucket: 19 left, 18, ... 0
        assert sorted(limits(r)[1] for r in accepted) == list(range(20))
        for r in accepted:
            limit, remaining, reset = limits(r)
            used = 20 - remaining
            assert limit == 20 and used * 180 - took <= reset <= used * 180, (used, reset)
        for r in refused:
            assert r.json()["error"]["code"] == "RATE_LIMITED"
            assert "images.generate" in r.json()["error"]["message"]
            assert limits(r)[:2] == (20, 0) and HOUR - took <= limits(r)[2] <= HOUR
            # the next unit comes back 180 s after the first request took it
            assert 180 - took <= int(r.headers["retry-after"]) <= 180
        # nothing refused was queued: exactly the accepted jobs exist
        db = redis.Redis.from_url(db_url(redis_url))
        assert db.zcard(keys.tenant_jobs("admin")) == 20


def test_two_tenants_never_share_a_bucket(redis_url: str, tmp_path: Any) -> None:
    plans = {"standard": {"endpoints": {"images.generate": {"count": 5, "period_s": HOUR}}}}
    with controller(redis_url, tmp_path, plans) as base:
        (_, first), (_, second) = new_key(base, "standard"), new_key(base, "standard")
        assert accepted(asyncio.run(fire(base, 50, "POST", GENERATE, first, json=BODY))) == 5
        assert accepted(asyncio.run(fire(base, 50, "POST", GENERATE, second, json=BODY))) == 5
        # the partner admin is on neither's bucket, nor on the standard plan's limit
        assert accepted(asyncio.run(fire(base, 50, "POST", GENERATE, json=BODY))) == 50


def test_standard_and_partner_plans_and_a_plan_change(redis_url: str, tmp_path: Any) -> None:
    with controller(redis_url, tmp_path) as base:  # the built-in plans
        (standard_tenant, standard), (_, partner) = (
            new_key(base, "standard"),
            new_key(base, "partner"),
        )
        started = time.monotonic()
        refused = asyncio.run(fire(base, 200, "POST", GENERATE, standard, json=BODY))
        took = time.monotonic() - started
        # 30 generate/min on standard (plus what refilled meanwhile, one per 2 s)
        assert 30 <= accepted(refused) <= 30 + math.ceil(took / 2)
        message = next(r for r in refused if r.status_code == 429).json()["error"]["message"]
        assert "images.generate requests on plan standard (30 per 60 s)" in message
        # a partner pushing prompts is not capped at 30: its 1,000 rpm with a 2,000 burst binds
        bulk = asyncio.run(fire(base, 200, "POST", GENERATE, partner, json=BODY))
        assert accepted(bulk) == 200 and limits(bulk[0])[0] == 2000
        # the plan is set per tenant; a change applies within the auth cache's half second
        changed = httpx.put(
            f"{base}/api/v1/admin/tenants/{standard_tenant}", headers=AUTH, json={"plan": "partner"}
        )
        assert changed.status_code == 200
        time.sleep(0.6)
        after = asyncio.run(fire(base, 20, "POST", GENERATE, standard, json=BODY))
        assert accepted(after) == 20


def test_headers_ride_on_errors_redirect_free_bytes_and_304s(redis_url: str, tmp_path: Any) -> None:
    plans = {"standard": {"endpoints": {"addons": {"count": 3, "period_s": HOUR}}}}
    with (
        controller(redis_url, tmp_path, plans) as base,
        httpx.Client(base_url=base, headers=AUTH, timeout=10) as api,
        httpx.Client(base_url=base, timeout=10) as anon,
    ):
        missing = api.get("/api/v1/images/status/nope")
        assert missing.status_code == 404 and limits(missing)[:2] == (2000, 1999)
        invalid = api.post(GENERATE, json={"prompt": ""})  # refused, but it counted
        assert invalid.status_code == 422 and limits(invalid)[1] == 1998
        # anonymous addon GETs: per client IP, with the standard plan's addon limit (3 here)
        first = anon.get("/api/v1/addons/sandbox")
        assert first.status_code == 200 and limits(first) == (3, 2, HOUR // 3)
        etag = first.headers["etag"]
        again = anon.get("/api/v1/addons/sandbox", headers={"If-None-Match": etag})
        assert again.status_code == 304 and limits(again)[:2] == (3, 1)
        assert limits(anon.get("/api/v1/addons"))[:2] == (3, 0)
        refused = anon.get("/api/v1/addons")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "RATE_LIMITED"
        assert int(refused.headers["retry-after"]) >= HOUR // 3 - 5
        # unlimited routes carry none
        assert "ratelimit-limit" not in api.get("/api/v1/health").headers


def test_the_overall_limit_spans_endpoints_and_a_refusal_takes_nothing(
    redis_url: str, tmp_path: Any
) -> None:
    plans = {
        "partner": {
            "overall": {"count": 6, "period_s": HOUR},
            "endpoints": {"images.status": {"count": 100, "period_s": HOUR}},
        }
    }
    with (
        controller(redis_url, tmp_path, plans) as base,
        httpx.Client(base_url=base, headers=AUTH, timeout=10) as api,
    ):
        job = api.post(GENERATE, json=BODY).json()["jobId"]
        for _ in range(3):
            assert api.get("/api/v1/jobs").status_code == 200
        status = api.get(f"/api/v1/images/status/{job}")
        assert status.status_code == 200
        assert limits(status)[:2] == (6, 1)  # the overall bucket binds: 1 of 6 left
        assert api.get(f"/api/v1/images/status/{job}").status_code == 200
        refused = api.get(f"/api/v1/images/status/{job}")
        assert refused.status_code == 429 and limits(refused)[:2] == (6, 0)
        assert "on plan partner (6 per 3600 s)" in refused.json()["error"]["message"]
        assert api.get("/api/v1/jobs").status_code == 429  # routes without their own bucket too
    # the refused status read left its endpoint bucket alone: 2 of 100 used, not 3
    r = redis.Redis.from_url(db_url(redis_url))
    tat_us = int(r.get("semantest:rl:images.status:t:admin") or 0)
    now_us = int(time.time() * 1e6)
    assert 2 * 36 - 5 <= (tat_us - now_us) / 1e6 <= 2 * 36


def test_reset_and_retry_after_follow_the_clock(redis_url: str, tmp_path: Any) -> None:
    plans = {"partner": {"endpoints": {"images.generate": {"count": 2, "period_s": 2}}}}
    with (
        controller(redis_url, tmp_path, plans) as base,
        httpx.Client(base_url=base, headers=AUTH, timeout=10) as api,
    ):
        first, second = api.post(GENERATE, json=BODY), api.post(GENERATE, json=BODY)
        assert limits(first) == (2, 1, 1) and limits(second) == (2, 0, 2)
        refused = api.post(GENERATE, json=BODY)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        time.sleep(1.05)  # one unit back
        assert limits(api.post(GENERATE, json=BODY))[:2] == (2, 0)
        time.sleep(2.05)  # full again
        assert limits(api.post(GENERATE, json=BODY))[:2] == (2, 1)


def test_addons_behind_keys_are_limited_per_tenant(redis_url: str, tmp_path: Any) -> None:
    plans = {"partner": {"endpoints": {"addons": {"count": 2, "period_s": HOUR}}}}
    with (
        controller(redis_url, tmp_path, plans, addons_public=False) as base,
        httpx.Client(base_url=base, headers=AUTH, timeout=10) as api,
    ):
        assert [api.get("/api/v1/addons").status_code for _ in range(3)] == [200, 200, 429]
        assert httpx.get(f"{base}/api/v1/addons").status_code == 401  # no key, no bucket
    r = redis.Redis.from_url(db_url(redis_url))
    assert r.exists("semantest:rl:addons:t:admin") and not r.keys("semantest:rl:*:ip:*")


def test_rate_limits_off_lets_everything_through(redis_url: str, tmp_path: Any) -> None:
    plans = {"partner": {"endpoints": {"images.generate": {"count": 1, "period_s": HOUR}}}}
    with controller(redis_url, tmp_path, plans, rate_limits=False) as base:
        replies = asyncio.run(fire(base, 50, "POST", GENERATE, json=BODY))
        assert {r.status_code for r in replies} == {202}
        assert not any("ratelimit-limit" in r.headers for r in replies)


def test_every_limited_route_adds_its_headers_and_the_named_endpoints_are_limited() -> None:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", chromium=None))
    buckets: dict[tuple[str, str | None], str] = {}
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        for dep in route.dependant.dependencies:
            if isinstance(dep.call, RateLimit):
                assert isinstance(route.original_route, LimitedRoute), route.path_format
                endpoint = dep.call.endpoint
                for method in route.methods or ():
                    bucket = "all" if endpoint is None else endpoint.value
                    buckets[(method, route.path_format)] = bucket
    assert buckets[("POST", "/api/v1/images/generate")] == "images.generate"
    assert buckets[("POST", "/api/v1/images/batch")] == "images.batch"
    assert buckets[("POST", "/api/v1/batch/generate")] == "images.batch"
    assert buckets[("POST", "/api/v1/chat/new")] == "chat.new"
    assert buckets[("GET", "/api/v1/images/status/{job_id}")] == "images.status"
    assert buckets[("GET", "/api/v1/addons")] == "addons"
    assert buckets[("GET", "/api/v1/addons/{addon_id}")] == "addons"
    assert buckets[("GET", "/api/v1/jobs")] == "all"
    assert ("GET", "/api/v1/health") not in buckets


# --- the limiter itself, against real Redis ---


async def checks(
    limiter: RateLimiter, caller: Caller, endpoint: Endpoint | None, n: int
) -> list[bool]:
    """`n` checks of one endpoint for `caller`, all at once."""
    subject, buckets = limiter.buckets_of(caller, endpoint, "127.0.0.1")
    decisions = await asyncio.gather(*(limiter.check(subject, buckets) for _ in range(n)))
    return [d.allowed for d in decisions]


def tenant(plan: str) -> Caller:
    return Caller(tenant=f"t-{uuid.uuid4().hex[:8]}", plan=plan)


def run_limiter(redis_url: str, plans: dict[str, Plan], body: Any) -> Any:
    async def go() -> Any:
        client = AsyncRedis.from_url(db_url(redis_url, DB + 1), max_connections=256)
        try:
            return await body(RateLimiter(client, plans))
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_the_script_is_exact_under_200_concurrent_checks(redis_url: str) -> None:
    plan = Plan("tight", overall=Limit(1000, HOUR), endpoints={Endpoint.GENERATE: Limit(17, HOUR)})

    async def body(limiter: RateLimiter) -> list[bool]:
        return await checks(limiter, tenant("tight"), Endpoint.GENERATE, 200)

    assert run_limiter(redis_url, {**PLANS, "tight": plan}, body).count(True) == 17


def test_plans_standard_vs_partner_and_partner_burst(redis_url: str) -> None:
    async def body(limiter: RateLimiter) -> tuple[int, int, int, float]:
        started = time.monotonic()
        standard = (await checks(limiter, tenant("standard"), Endpoint.GENERATE, 200)).count(True)
        partner = tenant("partner")
        first = (await checks(limiter, partner, Endpoint.GENERATE, 200)).count(True)
        rest = 0
        for _ in range(10):  # 2,000 more, in steps
            rest += (await checks(limiter, partner, Endpoint.GENERATE, 200)).count(True)
        return standard, first, rest, time.monotonic() - started

    standard, first, rest, took = run_limiter(redis_url, dict(PLANS), body)
    # a standard tenant gets its 30 generate/min (plus what refilled while the test ran)
    assert 30 <= standard <= 30 + math.ceil(took * 30 / 60)
    # a partner is not capped at 30: 200 at once all pass, and its burst is 2,000
    assert first == 200
    assert 2000 <= first + rest <= 2000 + math.ceil(took * 1000 / 60)


def test_tenants_never_share_a_bucket(redis_url: str) -> None:
    async def body(limiter: RateLimiter) -> tuple[int, int, int]:
        a, b = tenant("standard"), tenant("standard")
        drained = (await checks(limiter, a, Endpoint.BATCH, 50)).count(True)
        other = (await checks(limiter, b, Endpoint.BATCH, 50)).count(True)
        subject, buckets = limiter.buckets_of(a, Endpoint.STATUS, "127.0.0.1")
        status = await limiter.check(subject, buckets)  # a's other endpoints still answer
        return drained, other, int(status.allowed)

    assert run_limiter(redis_url, dict(PLANS), body) == (5, 5, 1)


def test_a_refusal_by_one_bucket_takes_nothing_from_the_other(redis_url: str) -> None:
    plan = Plan("p", overall=Limit(3, HOUR), endpoints={Endpoint.GENERATE: Limit(10, HOUR)})

    async def body(limiter: RateLimiter) -> tuple[list[bool], dict[str, int]]:
        caller = tenant("p")
        allowed = await checks(limiter, caller, Endpoint.GENERATE, 5)
        subject, buckets = limiter.buckets_of(caller, Endpoint.GENERATE, "127.0.0.1")
        last = await limiter.check(subject, buckets)
        return allowed, {b.name: b.remaining for b in last.buckets}

    allowed, remaining = run_limiter(redis_url, {**PLANS, "p": plan}, body)
    assert allowed.count(True) == 3
    assert remaining == {"images.generate": 7, "all": 0}


def test_settings_change_plans_and_unknown_plans_fall_back_to_standard() -> None:
    specs = {
        "partner": PlanSpec.model_validate({"overall": {"count": 5000, "burst": 9000}}),
        "gold": PlanSpec.model_validate({"overall": {"count": 300}}),
    }
    plans = resolve_plans(Settings(chromium=None, rate_limit_plans=specs).rate_limit_plans)
    assert plans["partner"].overall == Limit(5000, 60, 9000)
    assert plans["partner"].endpoints == PARTNER.endpoints
    assert plans["gold"].overall == Limit(300) and plans["gold"].endpoints == STANDARD.endpoints
    with pytest.raises(ValueError, match="overall count"):
        Settings(chromium=None, rate_limit_plans={"new": PlanSpec()})
    limiter = RateLimiter(AsyncRedis.from_url("redis://127.0.0.1:1/0"), plans)  # never connects
    assert limiter.plan("no-such-plan") is plans["standard"]
