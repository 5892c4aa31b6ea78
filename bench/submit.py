"""Submission speed: open-loop partner load, closed-loop capacity, batch accept, vs RQ and Redis.

    .venv/bin/python bench/submit.py [--seconds 10] [--clients 1000] [--rate 1000]
                                     [--hey-groups 10] [--connections 1000] [--batches 200]
                                     [--workers N] [--timeout 300] [--quick]

One run starts its own stack (redis-server, controller, sandbox; no agents, so every job stays
queued) on free loopback ports in a temporary data dir, and measures on this machine, with the
load generator sharing its cores:

1. **Partner load, open loop** (hey): `--clients` clients, each on its own keep-alive
   connection, offering `--rate` POST /api/v1/images/generate per second in all for
   `--seconds`. Targets: p99 < 250 ms, 0 errors, served ≥ 99% of the offered rate. How the
   clients are spread over hey processes so that they do not all fire in the same
   millisecond: bench/loadgen.py.
2. **Capacity, closed loop** (wrk): `--connections` connections sending back to back for
   `--seconds`. Targets: ≥ 2,000 accepted jobs/s, p99 < 1 s, 0 errors.
3. **Batch accept**: `--batches` POST /api/v1/images/batch of 100 distinct prompts, one after
   another from one client (httpx; a latency probe, not a load generator). Target p99 < 100 ms.
4. **Anchors, same Redis, same run**: RQ `enqueue_many` of the same job (100 per call) and
   one `enqueue_call` per job, from this process, and `redis-benchmark -t lpush`.

The bench's own Redis is emptied between phases, so no phase meets the queue depth the one
before left. Every phase is bounded by `--seconds` or a count, and the whole run by
`--timeout` (it stops the stack and exits 2 when reached). Only loopback URLs are loaded.

Exit status 0 when every phase ran; missed targets and errors are reported, not fatal.
`--quick` (2 s phases, 100 clients at 100/s, 100 connections, 20 batches) only keeps the script
working (tests/e2e/test_bench_submit.py); its figures mean little.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import httpx
import psutil
import redis
from e2e import percentile
from loadgen import Load, hey_open_loop, wrk_closed_loop
from redis_anchors import redis_benchmark_lpush, rq_enqueue_many, rq_enqueue_one
from report import Row, print_table
from submit_report import table

from semantest.config import Settings
from semantest.stack import Stack, free_port

REPO = Path(__file__).resolve().parents[1]
GENERATE = "/api/v1/images/generate"
BATCH = "/api/v1/images/batch"
BODY = '{"prompt": "a lighthouse on a cliff at dawn, watercolour", "provider": "sandbox"}'

QUICK = {"seconds": 2, "clients": 100, "rate": 100, "connections": 100, "batches": 20}
FULL = {"seconds": 10, "clients": 1000, "rate": 1000, "connections": 1000, "batches": 200}


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGALRM, _hard_timeout)
    signal.alarm(args.timeout)
    python = sys.executable
    if python.startswith(str(REPO) + os.sep):
        python = os.path.relpath(python, REPO)
    command = shlex.join([python, "bench/submit.py", *sys.argv[1:]])
    settings = Settings()
    workers = args.workers or settings.controller_workers
    print(f"command: {command}")
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{_version(['redis-server', '--version'])}, "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}; "
        f"controller: granian, {workers} worker process(es), rate limits off"
    )
    with tempfile.TemporaryDirectory(prefix="semantest-submit-") as tmp:
        settings = settings.model_copy(
            update={
                "redis_url": None,
                "data_dir": Path(tmp) / "data",
                "port": free_port(),
                "sandbox_port": free_port(),
                "controller_workers": workers,
                # The capacity phase is far beyond any plan's rate limit on purpose.
                "rate_limits": False,
                "log_level": "WARNING",
            }
        )
        with Stack(settings, agents=0, persist_redis=False) as stack:
            rows, cpu_lines = run(stack, args)
            if any(r.label.endswith("errors") and r.value for r in rows):
                controller = next(c for c in stack.children if c.name == "controller")
                print(f"errors: the controller's log ends with:\n{controller.tail(40)}")
    print()
    for line in cpu_lines:
        print(line)
    print(f"command: {command}")
    print_table(rows)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, help="length of each load phase (10)")
    parser.add_argument("--clients", type=int, help="open loop: concurrent clients (1000)")
    parser.add_argument("--rate", type=int, help="open loop: requests/s offered in all (1000)")
    parser.add_argument("--hey-groups", type=int, default=10, help="hey processes (10)")
    parser.add_argument("--connections", type=int, help="closed loop: connections (1000)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--batches", type=int, help="batches of 100 for the accept probe (200)")
    parser.add_argument("--anchor-seconds", type=float, default=3.0, help="per RQ anchor (3)")
    parser.add_argument("--request-timeout", type=float, default=5.0, help="per request (5 s)")
    parser.add_argument("--workers", type=int, help="controller processes (the setting's)")
    parser.add_argument("--timeout", type=int, default=300, help="hard limit of the run (300 s)")
    parser.add_argument("--quick", action="store_true", help="tiny phases: keeps it working")
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.seconds < 1 or args.seconds > 120:
        parser.error("--seconds must be 1..120")
    return args


def _hard_timeout(_signum: int, _frame: FrameType | None) -> None:
    print("hard timeout reached: stopping the stack", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return " ".join(out.split()[:3])


def run(stack: Stack, args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    """Every phase on one stack; the table's rows and what the CPUs did in each."""
    url = stack.url + GENERATE
    auth = f"Bearer {stack.admin_key}"
    redis_url = stack.settings.redis_url or ""
    r = redis.Redis.from_url(redis_url)
    controller = next(c for c in stack.children if c.name == "controller")
    redis_proc = next(c for c in stack.children if c.name == "redis")
    cpu_lines: list[str] = []

    def flush() -> None:
        # Everything but RQ's scheduler locks, which the controller's processes hold: dropping
        # them would only make the processes fight over them again.
        doomed = [k for k in r.scan_iter(count=10_000) if not k.startswith(b"rq:scheduler")]
        for i in range(0, len(doomed), 10_000):
            r.unlink(*doomed[i : i + 10_000])

    # Warm-up (not reported): every worker process takes connections and imports lazily.
    wrk_closed_loop(url, auth, BODY, connections=50, seconds=1, threads=1, timeout_s=5)
    flush()

    with _cpu(cpu_lines, "open loop", controller.proc.pid, redis_proc.proc.pid):
        opened = hey_open_loop(
            url,
            {"Authorization": auth},
            BODY,
            clients=args.clients,
            rate=args.rate,
            seconds=args.seconds,
            groups=args.hey_groups,
            timeout_s=args.request_timeout,
        )
    _print_load("open loop", opened)
    flush()

    with _cpu(cpu_lines, "closed loop", controller.proc.pid, redis_proc.proc.pid):
        closed = wrk_closed_loop(
            url,
            auth,
            BODY,
            connections=args.connections,
            seconds=args.seconds,
            threads=args.wrk_threads,
            timeout_s=args.request_timeout,
        )
    _print_load("closed loop", closed)
    flush()

    with _cpu(cpu_lines, "batch probe", controller.proc.pid, redis_proc.proc.pid):
        batch_ms, batch_errors = batch_probe(stack, args.batches, args.request_timeout)
    flush()

    with _cpu(cpu_lines, "anchors", controller.proc.pid, redis_proc.proc.pid):
        many = rq_enqueue_many(redis_url, args.anchor_seconds, max_jobs=200_000)
        flush()
        one = rq_enqueue_one(redis_url, args.anchor_seconds, max_jobs=50_000)
        flush()
        port = urlsplit(redis_url).port or 6379
        lpush = redis_benchmark_lpush("127.0.0.1", port, max(10_000, many.jobs), clients=50)
    flush()
    r.close()
    print(
        f"anchor RQ enqueue_many: {many.jobs} jobs in {many.seconds:.2f} s = {many.per_s:.0f} "
        f"jobs/s; per call of 100 p50 {many.p50_ms:.2f} ms, p99 {many.p99_ms:.2f} ms"
    )
    print(
        f"anchor RQ enqueue_call one at a time: {one.per_s:.0f} jobs/s, p50 {one.p50_ms:.2f} ms, "
        f"p99 {one.p99_ms:.2f} ms"
    )
    print(f"anchor {lpush.command}: {lpush.per_s:.0f}/s, p50 {lpush.p50_ms:.3f} ms")
    return table(args, opened, closed, batch_ms, batch_errors, many, one, lpush), cpu_lines


def batch_probe(stack: Stack, batches: int, timeout_s: float) -> tuple[list[float], dict[str, int]]:
    """Milliseconds of each accepted batch of 100 distinct prompts, and errors by kind."""
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    took: list[float] = []
    errors: dict[str, int] = {}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=timeout_s) as client:
        for n in range(batches):
            prompts = [f"batch probe {n} prompt {i}" for i in range(100)]
            started = time.perf_counter()
            try:
                reply = client.post(BATCH, json={"prompts": prompts, "provider": "sandbox"})
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if reply.status_code in (404, 405) and n == 0:
                print(f"batch probe: {BATCH} answers {reply.status_code}; no batch route here")
                return [], {f"no batch route (HTTP {reply.status_code})": 1}
            if reply.status_code != 202:
                kind = f"HTTP {reply.status_code}"
                errors[kind] = errors.get(kind, 0) + 1
                continue
            took.append((time.perf_counter() - started) * 1000)
    if took:
        print(
            f"batch probe: {len(took)} batches of 100 accepted, p50 {percentile(took, 50):.1f} "
            f"ms, p99 {percentile(took, 99):.1f} ms, errors {errors or 0}"
        )
    return took, errors


@contextlib.contextmanager
def _cpu(lines: list[str], label: str, controller_pid: int, redis_pid: int) -> Iterator[None]:
    """Record the cores the controller, Redis and the load generator used during the block."""

    def tree_seconds(pid: int) -> float:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def generator_seconds() -> float:
        u = resource.getrusage(resource.RUSAGE_CHILDREN)
        return u.ru_utime + u.ru_stime

    def busy_seconds() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + t.irq + t.softirq + t.steal

    def sample() -> tuple[float, ...]:
        own = psutil.Process().cpu_times()
        mine = own.user + own.system
        return tree_seconds(controller_pid), tree_seconds(redis_pid), generator_seconds(), mine

    before, busy_before = sample(), busy_seconds()
    started = time.perf_counter()
    yield
    wall = time.perf_counter() - started
    after, busy_after = sample(), busy_seconds()
    c, rd, g, me = ((a - b) / wall for a, b in zip(after, before, strict=True))
    # Whatever else ran on the machine meanwhile (other tests, builds) took cores from both.
    others = max(0.0, (busy_after - busy_before) / wall - c - rd - g - me)
    lines.append(
        f"CPU during {label} ({wall:.1f} s): controller {c:.2f} cores, redis {rd:.2f}, "
        f"load generator {g:.2f}, bench {me:.2f}, other processes {others:.2f} "
        f"(of {os.cpu_count()})"
    )


def _print_load(label: str, load: Load) -> None:
    rate = f" of {load.offered_per_s:.0f}/s offered" if load.offered_per_s else ""
    print(
        f"{label} ({load.command}): {load.sent} sent, {load.accepted} accepted in "
        f"{load.seconds:.2f} s = {load.accepted_per_s:.0f}/s{rate}; p50 {load.p50_ms:.1f} ms, "
        f"p99 {load.p99_ms:.1f} ms; errors {load.errors or 0} {' '.join(load.notes)}"
    )


if __name__ == "__main__":
    sys.exit(main())
