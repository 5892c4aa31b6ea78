"""`/api/v1/fleet` and `/api/v1/pressure` over real HTTP against a real redis-server.

Heartbeats are written the way an agent writes them (`AgentHeartbeat` JSON at `keys.agent(id)`
with a TTL, id scored in `keys.AGENTS`): that is the wire contract between the two processes.
Every key a test creates is removed again; other tests share database 0 (and leave jobs queued
there, so pressure tests measure against the queues' current length).
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from semantest import keys
from semantest.config import Settings
from semantest.fleet import AgentHeartbeat, AgentState, SlotInfo, SlotState
from semantest.models import KNOWN_PROVIDERS, Priority

pytestmark = pytest.mark.integration

LANE_KEY = keys.rq_queue_key(keys.queue_name("sandbox", "low"))


class Fleet:
    """Writes heartbeats and fake queued jobs, and removes all of them afterwards."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.ids: list[str] = []
        self.pushed: list[str] = []

    def beat(
        self,
        states: list[SlotState],
        *,
        state: AgentState = AgentState.READY,
        score: float | None = None,
        record: str | None = None,
    ) -> str:
        """Publish one agent with slots in `states` (or the raw `record`); returns its id."""
        agent_id = f"test-{uuid.uuid4().hex[:8]}"
        self.ids.append(agent_id)
        now = time.time()
        beat = AgentHeartbeat(
            id=agent_id,
            boot=uuid.uuid4().hex,
            host="testhost",
            pid=os.getpid(),
            state=state,
            providers=["sandbox"],
            slots=[
                SlotInfo(
                    index=i,
                    name=f"{agent_id}/{i}",
                    provider="sandbox",
                    account=f"acct-{i}",
                    state=s,
                    job_id="job-1" if s is SlotState.BUSY else None,
                    parked_reason="logged-out" if s is SlotState.PARKED else None,
                )
                for i, s in enumerate(states)
            ],
            started_at=now - 30,
            beat_at=now,
            ready_after_s=2.5,
            jobs_done=3,
            rss_bytes=600 * 2**20,
            extension_version="0.1.0",
        )
        with self.r.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.AGENTS, {agent_id: now if score is None else score})
            pipe.set(
                keys.agent(agent_id),
                record if record is not None else beat.model_dump_json(by_alias=True),
                ex=keys.LEASE_TTL_S,
            )
            pipe.execute()
        return agent_id

    def queued(self) -> int:
        waiting = [keys.waiting(p, lane.value) for p in KNOWN_PROVIDERS for lane in Priority]
        return sum(int(self.r.llen(rq)) + int(self.r.get(depth) or 0) for rq, depth in waiting)

    def push(self, n: int) -> None:
        ids = [f"fake-{uuid.uuid4().hex}" for _ in range(n)]
        self.pushed += ids
        if ids:
            self.r.rpush(LANE_KEY, *ids)

    def pop(self, n: int) -> None:
        for _ in range(n):
            self.r.lrem(LANE_KEY, 1, self.pushed.pop())

    def cleanup(self) -> None:
        self.pop(len(self.pushed))
        for agent_id in self.ids:
            self.r.zrem(keys.AGENTS, agent_id)
            self.r.delete(keys.agent(agent_id))
        self.r.delete(keys.PRESSURE)


@pytest.fixture
def fleet(redis_url: str) -> Iterator[Fleet]:
    r = redis.Redis.from_url(redis_url)
    r.delete(keys.PRESSURE)
    f = Fleet(r)
    try:
        yield f
    finally:
        f.cleanup()
        r.close()


def get_fleet(client: httpx.Client, ours: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    reply = client.get("/api/v1/fleet")
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body, [a for a in body["agents"] if a["id"] in ours]


def test_fleet_lists_live_agents_with_slots_and_totals(client: httpx.Client, fleet: Fleet) -> None:
    a = fleet.beat([SlotState.BUSY, SlotState.IDLE, SlotState.PARKED])
    b = fleet.beat([SlotState.DRAINING], state=AgentState.DRAINING)
    body, agents = get_fleet(client, fleet.ids)
    assert set(body) == {"agents", "totals", "at", "providers"}
    assert body["providers"]["sandbox"]["status"] in ("ok", "degraded", "unknown")
    assert abs(body["at"] - time.time()) < 5
    assert [x["id"] for x in agents] == sorted([a, b])
    first = next(x for x in agents if x["id"] == a)
    assert first["host"] == "testhost" and first["pid"] == os.getpid()
    assert first["jobsDone"] == 3 and first["rssBytes"] == 600 * 2**20
    assert first["readyAfterS"] == 2.5 and first["extensionVersion"] == "0.1.0"
    assert first["addons"] == []
    slots = first["slots"]
    assert [s["state"] for s in slots] == ["busy", "idle", "parked"]
    assert slots[0]["jobId"] == "job-1" and slots[0]["account"] == "acct-0"
    assert slots[2]["parkedReason"] == "logged-out"
    # totals over every live agent; in this database only ours are live
    assert body["totals"] == {
        "agents": 2,
        "slots": 4,
        "busy": 1,
        "idle": 1,
        "parked": 1,
        "draining": 1,
    }


def test_fleet_prunes_stale_members_and_skips_expired_records(
    client: httpx.Client, fleet: Fleet
) -> None:
    live = fleet.beat([SlotState.IDLE])
    stale = fleet.beat([SlotState.IDLE], score=time.time() - keys.LEASE_TTL_S - 5)
    gone = fleet.beat([SlotState.IDLE])
    fleet.r.delete(keys.agent(gone))  # lease expired, member still recent
    _body, agents = get_fleet(client, fleet.ids)
    assert [x["id"] for x in agents] == [live]
    assert fleet.r.zscore(keys.AGENTS, stale) is None  # pruned on read
    assert fleet.r.zscore(keys.AGENTS, live) is not None
    assert fleet.r.zscore(keys.AGENTS, gone) is not None  # left for its own score to expire


def test_invalid_heartbeat_is_skipped_and_logged_once(
    client: httpx.Client, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    good = fleet.beat([SlotState.IDLE])
    old = fleet.beat([], record='{"id": "x", "pid": 1, "slots": 1, "busy": 0}')
    junk = fleet.beat([], record="not json")
    with caplog.at_level(logging.WARNING, logger="controller.routes.fleet"):
        for _ in range(3):
            body, agents = get_fleet(client, fleet.ids)
            assert [x["id"] for x in agents] == [good]
            assert body["totals"]["agents"] == 1
    for bad in (old, junk):
        assert sum(bad in r.getMessage() for r in caplog.records) == 1
    pressure = client.get("/api/v1/pressure").json()
    assert pressure["agents"] == 1 and pressure["slots"] == 1


def test_fleet_needs_a_key_and_pressure_does_not(anon: httpx.Client) -> None:
    reply = anon.get("/api/v1/fleet")
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "UNAUTHORIZED"
    bad = anon.get("/api/v1/fleet", headers={"Authorization": "Bearer sk_wrong"})
    assert bad.status_code == 401
    assert anon.get("/api/v1/pressure").status_code == 200


def test_openapi_documents_fleet_and_pressure(anon: httpx.Client) -> None:
    spec = anon.get("/openapi.json").json()
    assert {"/api/v1/fleet", "/api/v1/pressure"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert "isAvailable" in schemas["Pressure"]["properties"]
    assert "queuedByLane" in schemas["Pressure"]["properties"]
    assert "totals" in schemas["Fleet"]["properties"]


def pressure_of(client: httpx.Client) -> dict[str, Any]:
    reply = client.get("/api/v1/pressure")
    assert reply.status_code == 200, reply.text
    assert "retry-after" not in reply.headers
    body: dict[str, Any] = reply.json()
    return body


def test_pressure_without_agents_is_unavailable(
    client: httpx.Client, fleet: Fleet, api_settings: Settings
) -> None:
    body = pressure_of(client)
    assert body["isAvailable"] is False and body["reason"] == "no-agents"
    assert body["slots"] == 0 and body["maxQueued"] == 0 and body["resumeAt"] == 0
    assert body["message"]
    # parked slots and draining agents take no work either
    fleet.beat([SlotState.PARKED, SlotState.PARKED])
    fleet.beat([SlotState.IDLE, SlotState.BUSY], state=AgentState.DRAINING)
    body = pressure_of(client)
    assert body["isAvailable"] is False and body["reason"] == "no-agents"
    assert body["agents"] == 2 and body["parked"] == 2 and body["busy"] == 1
    assert body["slots"] == 0 and body["freeSlots"] == 0


def test_pressure_hysteresis(client: httpx.Client, fleet: Fleet, api_settings: Settings) -> None:
    baseline = fleet.queued()  # jobs other tests left queued in this database
    per_slot, ratio = api_settings.pressure_queue_per_slot, api_settings.pressure_resume_ratio
    # enough slots that the resume mark lies above what is already queued
    slots = math.ceil((baseline + 2) / (per_slot * ratio)) + 1
    states = [SlotState.IDLE] * (slots - 1) + [SlotState.BUSY]
    fleet.beat(states)
    max_queued = slots * per_slot
    resume_at = math.floor(max_queued * ratio)
    assert baseline + 1 < resume_at < max_queued - 1

    body = pressure_of(client)
    assert body["isAvailable"] is True and body["reason"] == "ok"
    assert body["slots"] == slots and body["freeSlots"] == slots - 1 and body["busy"] == 1
    assert body["agents"] == 1 and body["parked"] == 0
    assert body["maxQueued"] == max_queued and body["resumeAt"] == resume_at
    assert body["queued"] == baseline and abs(body["date"] - time.time()) < 5
    lanes = {f"{p}.{lane.value}" for p in KNOWN_PROVIDERS for lane in Priority}
    assert set(body["queuedByLane"]) == lanes

    def expect(queued: int, available: bool) -> None:
        now = fleet.queued()
        if queued > now:
            fleet.push(queued - now)
        else:
            fleet.pop(now - queued)
        body = pressure_of(client)
        assert body["queued"] == queued
        assert body["isAvailable"] is available, (queued, body)
        assert body["reason"] == ("ok" if available else "queue-full")

    expect(max_queued - 1, True)  # below the limit: still taking work
    expect(max_queued, False)  # at the limit: full
    low = pressure_of(client)["queuedByLane"]["sandbox.low"]
    assert low >= max_queued - baseline
    expect(max_queued + 5, False)
    expect(max_queued - 1, False)  # below the limit but above the resume mark: still full
    expect(resume_at + 1, False)
    assert fleet.r.get(keys.PRESSURE) == b"queue-full"  # the latch every controller shares
    expect(resume_at, True)  # drained to the mark: available again
    assert fleet.r.get(keys.PRESSURE) is None
    expect(max_queued - 1, True)  # rising again: available until the limit
    expect(max_queued, False)
