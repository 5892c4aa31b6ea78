"""The anchors of bench/submit.py: what RQ and Redis alone do on the same Redis, same run.

- RQ `Queue.enqueue_many`: the same job the controller enqueues (function by dotted path, id,
  timeout, TTLs, failure callback), 100 per pipelined call, from this one Python process: how
  fast RQ can put jobs on this Redis with no HTTP, no validation, no record.
- RQ `enqueue_call`, one job per call (one round trip each), as a request handler would.
- `redis-benchmark -t lpush`: Redis' own ceiling for the simplest queue write.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass

import redis
from e2e import percentile
from rq import Callback, Queue

from semantest import keys

BATCH = 100


@dataclass
class Enqueued:
    jobs: int
    seconds: float
    #: Milliseconds of each call (one job, or one batch of BATCH jobs).
    calls_ms: list[float]

    @property
    def per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.calls_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.calls_ms, 99)


def _queue(r: redis.Redis) -> Queue:
    return Queue(keys.queue_name("sandbox", "normal"), connection=r)


def _job_data(job_id: str) -> object:
    # The same options as controller/queueing.py gives a submitted job.
    return Queue.prepare_data(
        keys.GENERATE_FUNC,
        args=(job_id,),
        job_id=job_id,
        timeout=180 + keys.RQ_TIMEOUT_MARGIN_S,
        result_ttl=3600,
        failure_ttl=keys.RECORD_TTL_S,
        on_failure=Callback(keys.FAILURE_CALLBACK),
    )


def rq_enqueue_many(redis_url: str, seconds: float, max_jobs: int) -> Enqueued:
    """Batches of BATCH jobs through `enqueue_many` for `seconds` (at most `max_jobs`)."""
    r = redis.Redis.from_url(redis_url)
    queue = _queue(r)
    calls: list[float] = []
    jobs = 0
    started = time.perf_counter()
    end = started + seconds
    try:
        while time.perf_counter() < end and jobs < max_jobs:
            datas = [_job_data(uuid.uuid4().hex) for _ in range(BATCH)]
            t = time.perf_counter()
            with r.pipeline() as pipe:
                queue.enqueue_many(datas, pipeline=pipe)
                pipe.execute()
            calls.append((time.perf_counter() - t) * 1000)
            jobs += BATCH
        took = time.perf_counter() - started
    finally:
        r.close()
    return Enqueued(jobs, took, calls)


def rq_enqueue_one(redis_url: str, seconds: float, max_jobs: int) -> Enqueued:
    """One `enqueue_call` per job (one round trip each) for `seconds` (at most `max_jobs`)."""
    r = redis.Redis.from_url(redis_url)
    queue = _queue(r)
    calls: list[float] = []
    started = time.perf_counter()
    end = started + seconds
    try:
        while time.perf_counter() < end and len(calls) < max_jobs:
            job_id = uuid.uuid4().hex
            t = time.perf_counter()
            queue.enqueue_call(
                func=keys.GENERATE_FUNC,
                args=(job_id,),
                job_id=job_id,
                timeout=180 + keys.RQ_TIMEOUT_MARGIN_S,
                result_ttl=3600,
                failure_ttl=keys.RECORD_TTL_S,
                on_failure=Callback(keys.FAILURE_CALLBACK),
            )
            calls.append((time.perf_counter() - t) * 1000)
        took = time.perf_counter() - started
    finally:
        r.close()
    return Enqueued(len(calls), took, calls)


@dataclass
class Benchmarked:
    per_s: float
    p50_ms: float
    command: str


def redis_benchmark_lpush(host: str, port: int, requests: int, clients: int) -> Benchmarked:
    """`redis-benchmark -t lpush` on the same Redis (no pipelining)."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to benchmark Redis at {host}: loopback only")
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark is not installed (it comes with redis-server)")
    argv = [binary, "-h", host, "-p", str(port), "-t", "lpush"]
    argv += ["-n", str(requests), "-c", str(clients), "--csv"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    if done.returncode != 0 or not rows:
        raise SystemExit(f"redis-benchmark failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    row = rows[0]
    return Benchmarked(
        float(row["rps"]),
        float(row.get("p50_latency_ms") or 0),
        f"redis-benchmark -t lpush -n {requests} -c {clients}",
    )
