"""`GET /metrics` on a real controller and Redis: route templates, lane depths, the fleet's
slots, final jobs; the scrape target list; and a controller of two granian workers whose
samples are summed whichever worker answers."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from pydantic import SecretStr

from semantest import keys
from semantest.config import Settings
from semantest.fleet import AgentHeartbeat, AgentState, SlotInfo, SlotState
from semantest.stack import free_port
from tests.conftest import ADMIN_KEY, serve_controller

pytestmark = pytest.mark.integration

DB = 54


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of `name` whose labels include `labels`, if any."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    return None


@pytest.fixture(scope="module")
def settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        redis_url=f"{redis_url.rsplit('/', 1)[0]}/{DB}",
        admin_key=SecretStr(ADMIN_KEY),
        port=free_port(),
        data_dir=tmp_path_factory.mktemp("metrics"),
        chromium=None,
    )


@pytest.fixture(scope="module")
def url(settings: Settings) -> Iterator[str]:
    r = redis.Redis.from_url(settings.redis_url or "")
    r.flushdb()
    r.close()
    with serve_controller(settings) as running:
        yield running


@pytest.fixture
def api(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    ) as c:
        yield c


def test_requests_are_timed_by_route_template_never_by_raw_path(api: httpx.Client) -> None:
    job_id = uuid.uuid4().hex
    assert api.get(f"/api/v1/images/status/{job_id}").status_code == 404
    assert api.get(f"/no/such/{job_id}").status_code == 404
    text = api.get("/metrics").text
    route = "/api/v1/images/status/{job_id}"
    assert sample(
        text,
        "semantest_http_request_duration_seconds_count",
        method="GET",
        route=route,
        status="404",
    )
    assert sample(text, "semantest_http_request_duration_seconds_count", route="unmatched")
    assert job_id not in text  # no id, no raw path in any label


def test_lane_depth_and_final_jobs_by_status_and_tenant(api: httpx.Client) -> None:
    def depth() -> float | None:
        return sample(
            api.get("/metrics").text, "semantest_queue_depth", provider="sandbox", lane="high"
        )

    before = depth()
    assert before is not None
    job_id = api.post(
        "/api/v1/images/generate", json={"prompt": "a metric", "priority": "high"}
    ).json()["jobId"]
    assert depth() == before + 1
    labels = {"provider": "sandbox", "lane": "high", "status": "canceled", "code": ""}
    canceled = sample(api.get("/metrics").text, "semantest_jobs_finished_total", **labels) or 0
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code in (200, 202)
    text = api.get("/metrics").text
    assert depth() == before
    assert sample(text, "semantest_jobs_finished_total", **labels) == canceled + 1
    assert sample(
        text,
        "semantest_job_total_seconds_count",
        provider="sandbox",
        tenant="admin",
        status="canceled",
    )


def test_slots_by_state_with_why_parked_from_live_heartbeats(
    api: httpx.Client, settings: Settings
) -> None:
    now = time.time()
    beat = AgentHeartbeat(
        id="agent-m",
        boot="b1",
        host="h",
        pid=1,
        state=AgentState.READY,
        providers=["sandbox"],
        slots=[
            SlotInfo(
                index=0, name="agent-m/0", provider="sandbox", account="a", state=SlotState.BUSY
            ),
            SlotInfo(
                index=1,
                name="agent-m/1",
                provider="sandbox",
                account="a",
                state=SlotState.PARKED,
                parked_reason="logged-out",
            ),
        ],
        started_at=now,
        beat_at=now,
        pss_bytes=123456,
    )
    r = redis.Redis.from_url(settings.redis_url or "")
    r.zadd(keys.AGENTS, {"agent-m": now})
    r.set(keys.agent("agent-m"), beat.model_dump_json(by_alias=True), ex=30)
    try:
        text = api.get("/metrics").text
    finally:
        r.zrem(keys.AGENTS, "agent-m")
        r.delete(keys.agent("agent-m"))
        r.close()
    assert sample(text, "semantest_slots", provider="sandbox", state="busy") == 1
    assert (
        sample(text, "semantest_slots", provider="sandbox", state="parked", reason="logged-out")
        == 1
    )
    assert sample(text, "semantest_slot_utilisation", provider="sandbox") == 0.5
    assert sample(text, "semantest_agents", state="ready") == 1
    assert sample(text, "semantest_agent_memory_bytes", agent="agent-m", kind="pss") == 123456


def test_scrape_targets_in_http_sd_format_and_closed_when_not_public(
    url: str, settings: Settings
) -> None:
    r = redis.Redis.from_url(settings.redis_url or "")
    fresh = {
        "target": "127.0.0.1:9999",
        "role": "agent",
        "instance": "agent-t",
        "seen": time.time(),
    }
    stale = fresh | {"instance": "agent-old", "seen": time.time() - 3600}
    r.hset(keys.METRICS_TARGETS, mapping={"agent/agent-t": json.dumps(fresh)})
    r.hset(keys.METRICS_TARGETS, mapping={"agent/agent-old": json.dumps(stale)})
    r.close()
    answer = httpx.get(f"{url}/api/v1/metrics/targets").json()
    assert {
        "targets": ["127.0.0.1:9999"],
        "labels": {"job": "semantest-agent", "role": "agent", "name": "agent-t"},
    } in answer
    assert all(t["labels"]["name"] != "agent-old" for t in answer)
    r = redis.Redis.from_url(settings.redis_url or "")
    assert r.hexists(keys.METRICS_TARGETS, "agent/agent-t")
    assert not r.hexists(keys.METRICS_TARGETS, "agent/agent-old")  # pruned by that read
    r.close()
    closed = settings.model_copy(update={"metrics_public": False, "port": free_port()})
    with serve_controller(closed) as private:
        assert httpx.get(f"{private}/metrics").status_code == 401
        assert httpx.get(f"{private}/api/v1/metrics/targets").status_code == 401
        with_key = httpx.get(f"{private}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert with_key.status_code == 200 and "semantest_queue_depth" in with_key.text


def test_two_granian_workers_are_summed_whoever_answers(settings: Settings, tmp_path: Path) -> None:
    """`python -m controller` with two workers: 60 requests over fresh connections land on both
    workers, and every scrape, whichever worker answers it, counts all 60."""
    own = settings.model_copy(update={"port": free_port(), "data_dir": tmp_path})
    env = {
        **{k: v for k, v in __import__("os").environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        "SEMANTEST_REDIS_URL": own.redis_url or "",
        "SEMANTEST_ADMIN_KEY": ADMIN_KEY,
        "SEMANTEST_PORT": str(own.port),
        "SEMANTEST_DATA_DIR": str(tmp_path),
        "SEMANTEST_CONTROLLER_WORKERS": "2",
        "SEMANTEST_LOG_LEVEL": "DEBUG",  # lines for sure, to check they are all JSON
    }
    log = (tmp_path / "controller.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = own.controller_url
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "controller.log").read_text()
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "controller did not start"
            time.sleep(0.1)
        pids = set()
        for _ in range(60):  # a new connection each: granian spreads them over its workers
            httpx.get(f"{url}/api/v1/pressure", timeout=5)
        for _ in range(6):
            text = httpx.get(f"{url}/metrics", timeout=5).text
            count = sample(
                text,
                "semantest_http_request_duration_seconds_count",
                route="/api/v1/pressure",
                status="200",
            )
            assert count == 60, text[:2000]
        files = list((tmp_path / "metrics").glob("controller-*/*.db"))
        pids = {f.stem.rsplit("_", 1)[-1] for f in files}
        assert len(pids) >= 2, files  # both workers wrote samples
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    # the main process, its workers and granian itself log JSON lines only
    lines = (tmp_path / "controller.log").read_text().splitlines()
    assert lines and all(json.loads(line)["role"] == "controller" for line in lines)


def test_rate_limit_rejections_by_endpoint_and_plan(settings: Settings) -> None:
    from semantest.plans import PlanSpec

    plans = {"partner": PlanSpec.model_validate({"overall": {"count": 3, "period_s": 3600}})}
    limited = settings.model_copy(update={"port": free_port(), "rate_limit_plans": plans})

    def forget_buckets() -> None:  # the three-request plan must not outlive this test
        r = redis.Redis.from_url(settings.redis_url or "")
        for key in r.scan_iter(f"{keys.PREFIX}:rl:*"):
            r.delete(key)
        r.close()

    forget_buckets()
    with contextlib.ExitStack() as cleanup, serve_controller(limited) as url:
        cleanup.callback(forget_buckets)
        before = sample(
            httpx.get(f"{url}/metrics").text,
            "semantest_rate_limit_rejections_total",
            endpoint="all",
            plan="partner",
        )
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        codes = [
            httpx.get(f"{url}/api/v1/images/status/{uuid.uuid4().hex}", headers=auth).status_code
            for _ in range(5)
        ]
        assert codes.count(429) >= 2, codes
        after = sample(
            httpx.get(f"{url}/metrics").text,
            "semantest_rate_limit_rejections_total",
            endpoint="all",
            plan="partner",
        )
        assert after == (before or 0) + codes.count(429)


def test_addon_hits_and_304s_on_the_fast_path_and_through_the_routes(
    url: str, api: httpx.Client
) -> None:
    def count(route: str, status: str) -> float:
        text = httpx.get(f"{url}/metrics").text
        return sample(text, "semantest_addon_requests_total", route=route, status=status) or 0

    index = "/api/v1/addons"
    hits, not_modified = count(index, "200"), count(index, "304")
    first = httpx.get(f"{url}{index}")  # public: answered in front of the app
    assert first.status_code == 200
    again = httpx.get(f"{url}{index}", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert (count(index, "200"), count(index, "304")) == (hits + 1, not_modified + 1)
    source = "/api/v1/addons/{addon_id}"
    before = count(source, "200")
    assert httpx.get(f"{url}/api/v1/addons/sandbox").status_code == 200
    assert count(source, "200") == before + 1
    # with a key the request goes through the FastAPI route: counted the same way
    with_key = api.get("/api/v1/addons", headers={"If-None-Match": first.headers["etag"]})
    assert with_key.status_code == 304
    assert count(index, "304") == not_modified + 2
