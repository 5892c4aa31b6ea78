"""Chaos: many jobs, agents SIGKILLed every few seconds, Redis restarted once — nothing lost,
nothing duplicated.

    .venv/bin/python bench/chaos.py [--jobs 2000] [--agents 3] [--slots 2] [--kill-every 4]
                                    [--latency-ms 300] [--timeout 1800] [--no-redis-restart]

One run:

1. starts a `Stack` on free loopback ports with its own redis-server (AOF on), a temp data
   dir, `max_attempts=6`, `retry_backoff_s=[0, 1]` and the given sandbox latency, with
   N agents x K slots under the pool supervisor;
2. submits every job at once (unique prompts, concurrent POST /api/v1/images/generate);
3. while jobs run: SIGKILLs a live agent every `kill_every` seconds (one whose heartbeat shows
   a busy slot; pids from GET /api/v1/fleet; the pool restarts it), and once half the jobs
   are final restarts Redis (SIGTERM, so it writes its AOF; the controller and agents must
   ride it out);
4. waits until every job is final (bounded by `--timeout`), then checks from Redis and the
   image folder: every job `succeeded`; none has two `succeeded` events or images other than
   the one PNG the sandbox renders for its prompt; every stored file's bytes are that PNG;
   and, for every kill, how long each job that was running on the killed agent waited until
   its next lease ("re-run wait").

Prints a summary and exits 1 when a job was lost, duplicated or stored wrong bytes.
`tests/e2e/test_chaos.py` runs the same driver (`run_chaos`) with fewer jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis
from chaos_report import FINAL, ChaosResult, Kill, verify

from semantest import keys
from semantest.config import Settings
from semantest.stack import Stack, free_port


def chaos_settings(data_dir: Path, latency_ms: int, **overrides: Any) -> Settings:
    """A stack of its own: own Redis (started by the Stack), free ports, generous retries."""
    values: dict[str, Any] = {
        "redis_url": None,
        "admin_key": None,
        "port": free_port(),
        "sandbox_port": free_port(),
        "data_dir": data_dir,
        "sandbox_latency_ms": latency_ms,
        "max_attempts": 6,
        "retry_backoff_s": [0, 1],
        # it submits thousands of jobs at once: it measures loss under faults, not the limiter
        "rate_limits": False,
    }
    return Settings(**(values | overrides))


async def _submit_all(url: str, key: str, prompts: list[str], concurrency: int) -> list[str]:
    limit = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as c:

        async def one(prompt: str) -> str:
            async with limit:
                for attempt in range(5):
                    try:
                        reply = await c.post("/api/v1/images/generate", json={"prompt": prompt})
                    except httpx.TransportError:
                        if attempt == 4:
                            raise
                        await asyncio.sleep(0.5)
                        continue
                    if reply.status_code != 202:
                        raise RuntimeError(f"submit refused: {reply.status_code} {reply.text}")
                    job_id: str = reply.json()["jobId"]
                    return job_id
                raise AssertionError("unreachable")

        return list(await asyncio.gather(*(one(p) for p in prompts)))


def submit_all(url: str, key: str, prompts: list[str], concurrency: int = 32) -> list[str]:
    """Job ids of `prompts`, submitted concurrently, in the same order."""
    return asyncio.run(_submit_all(url, key, prompts, concurrency))


def statuses(r: redis.Redis, job_ids: list[str]) -> Counter[str]:
    """How many jobs are in each status (one MGET per 500 ids)."""
    counts: Counter[str] = Counter()
    for i in range(0, len(job_ids), 500):
        for raw in r.mget([keys.job(j) for j in job_ids[i : i + 500]]):
            counts["missing" if raw is None else json.loads(raw)["status"]] += 1
    return counts


def fleet(url: str, key: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{url}/api/v1/fleet", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    reply.raise_for_status()
    agents: list[dict[str, Any]] = reply.json()["agents"]
    return agents


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped by the pool) is not alive
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_one(stack: Stack, rng: random.Random, killed: set[int]) -> Kill | None:
    """SIGKILL one live agent whose heartbeat shows a busy slot; None when there is none."""
    try:
        agents = fleet(stack.url, stack.admin_key)
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    live = [a for a in agents if a["pid"] not in killed and pid_alive(a["pid"])]
    busy = [a for a in live if any(s.get("jobId") for s in a.get("slots", []))]
    if not busy:
        return None
    victim = rng.choice(busy)
    jobs = [s["jobId"] for s in victim.get("slots", []) if s.get("jobId")]
    at = time.time()
    try:
        os.kill(victim["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return None
    killed.add(victim["pid"])
    return Kill(at=at, agent=victim["id"], pid=victim["pid"], busy_jobs=jobs)


def run_chaos(
    jobs: int = 2000,
    agents: int = 3,
    slots: int = 2,
    kill_every: float = 4.0,
    latency_ms: int = 300,
    *,
    redis_restart: bool = True,
    redis_down_s: float = 1.0,
    timeout_s: float = 1800.0,
    stall_s: float = 60.0,
    data_dir: Path | None = None,
    seed: int | None = None,
    say: Callable[[str], None] = print,
    **overrides: Any,
) -> ChaosResult:
    """Run one chaos experiment and return what it measured (see the module docstring)."""
    began = time.monotonic()
    rng = random.Random(seed)
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="semantest-chaos-"))
    settings = chaos_settings(data_dir, latency_ms, **overrides)
    run_id = uuid.uuid4().hex[:8]
    prompts = [f"chaos {run_id} job {i}: a lighthouse in a storm" for i in range(jobs)]
    kills: list[Kill] = []
    restarts = 0
    down_s = 0.0
    timed_out = False
    with Stack(settings, agents=agents, slots=slots, persist_redis=True) as stack:
        startup = time.monotonic() - began
        say(f"stack up in {startup:.1f} s ({agents} agents x {slots} slots); data in {data_dir}")
        r = redis.Redis.from_url(stack.settings.redis_url or "", socket_timeout=5)
        t_submit = time.monotonic()
        job_ids = submit_all(stack.url, stack.admin_key, prompts)
        submit_s = time.monotonic() - t_submit
        say(f"submitted {jobs} jobs in {submit_s:.1f} s")
        killed: set[int] = set()
        next_kill = t_submit + kill_every  # submitting takes a while; jobs run meanwhile
        next_report = time.monotonic() + 10
        deadline = t_submit + timeout_s
        counts: Counter[str] = Counter()
        last_final, progressed = -1, time.monotonic()
        while True:
            now = time.monotonic()
            try:
                counts = statuses(r, job_ids)
            except redis.RedisError:
                time.sleep(0.2)
                continue
            final = sum(counts[s] for s in FINAL)
            if final >= jobs:
                break
            if final != last_final:
                last_final, progressed = final, now
            if now > deadline or now - progressed > stall_s:
                timed_out = True
                why = f"after {timeout_s:.0f} s"
                if now <= deadline:
                    why = f"no job final for {stall_s:.0f} s"
                say(f"gave up waiting ({why}): {dict(counts)}")
                break
            if redis_restart and restarts == 0 and final >= jobs // 2:
                say(f"restarting Redis ({final}/{jobs} final)")
                t0 = time.monotonic()
                stack.restart_redis(down_s=redis_down_s)
                down_s = time.monotonic() - t0
                restarts += 1
                say(f"Redis back after {down_s:.1f} s")
                continue
            if now >= next_kill:
                kill = kill_one(stack, rng, killed)
                if kill is not None:
                    kills.append(kill)
                    say(
                        f"killed {kill.agent} (pid {kill.pid}, running {len(kill.busy_jobs)}) "
                        f"at {final}/{jobs} final"
                    )
                    next_kill = now + kill_every
                else:
                    next_kill = now + 0.5
            if now >= next_report:
                say(f"{final}/{jobs} final: {dict(counts)}")
                next_report = now + 10
            time.sleep(0.25)
        run_s = time.monotonic() - t_submit
        say(f"stopped waiting after {run_s:.1f} s; verifying")
        checks = verify(r, settings.images_dir, job_ids, prompts, kills)
        r.close()
    wall = time.monotonic() - began
    return ChaosResult(
        jobs=jobs,
        agents=agents,
        slots=slots,
        latency_ms=latency_ms,
        kills=len(kills),
        redis_restarts=restarts,
        redis_down_s=down_s,
        startup_s=startup,
        submit_s=submit_s,
        run_s=run_s,
        wall_s=wall,
        throughput_per_s=counts["succeeded"] / run_s if run_s else 0.0,
        succeeded=counts["succeeded"],
        timed_out=timed_out,
        data_dir=str(data_dir),
        **checks,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between kills")
    parser.add_argument("--latency-ms", type=int, default=300, help="sandbox reply latency")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for all jobs")
    parser.add_argument("--stall", type=float, default=60.0, help="give up after s w/o progress")
    parser.add_argument("--no-redis-restart", action="store_true")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--data-dir", type=Path, help="default: a new temp dir (kept)")
    args = parser.parse_args()
    result = run_chaos(
        args.jobs,
        args.agents,
        args.slots,
        args.kill_every,
        args.latency_ms,
        redis_restart=not args.no_redis_restart,
        timeout_s=args.timeout,
        stall_s=args.stall,
        data_dir=args.data_dir,
        seed=args.seed,
        say=lambda line: print(line, flush=True),
    )
    print(result.summary(), flush=True)
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
