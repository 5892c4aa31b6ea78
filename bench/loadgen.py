"""The load generators bench/submit.py drives, and what their output says.

- **Open loop: hey** (`hey -q`, Debian package `hey`). Each hey worker is one client with its
  own keep-alive connection sending one request per tick of its own ticker (`-q` is per
  worker). All the workers of one hey process start together, so their ticks line up: 1,000
  workers at `-q 1` would send 1,000 requests in the same millisecond, once a second, which is
  not what 1,000 independent clients do. The clients are therefore split over `groups` hey
  processes started 1/(groups x q) s apart (10 groups: 100 requests every 100 ms); `groups=1`
  gives the lock-step burst. Each process runs `-n` (clients x seconds) requests, so the
  number sent is known exactly: a request missing from hey's CSV (which lists only answered
  requests) is a socket error or a timeout.
- **Closed loop: wrk** (Debian package `wrk`), N connections sending back to back; a Lua
  script sets the POST body and key and prints wrk's own summary as one JSON line.

Every target is a loopback URL; anything else is refused.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from e2e import percentile

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def loopback_only(url: str) -> str:
    """`url`, if it points at this machine's loopback interface; otherwise exit."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"refusing to load {url}: only loopback targets ({host!r} is not)")
    return url


def tool(name: str) -> str:
    """The path of a load generator, or exit with how to install it."""
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is not installed: `make setup` installs it (Debian: {name})")
    return path


@dataclass
class Load:
    """What one load phase did: requests sent and answered, errors, latency."""

    tool: str
    sent: int
    accepted: int  # answered with the expected status
    #: Errors by kind: HTTP statuses other than the expected one, socket errors, timeouts.
    errors: dict[str, int]
    seconds: float  # the window the rate is taken over
    p50_ms: float
    p99_ms: float
    offered_per_s: float | None = None
    command: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def hey_open_loop(
    url: str,
    headers: dict[str, str],
    body: str,
    *,
    clients: int,
    rate: int,
    seconds: int,
    groups: int,
    timeout_s: float,
    expect: int = 202,
) -> Load:
    """`clients` hey workers offering `rate` requests/s in all for `seconds`, in `groups`."""
    loopback_only(url)
    hey = tool("hey")
    per_worker = rate // clients
    if per_worker < 1 or per_worker * clients != rate:
        raise SystemExit(f"--rate must be a multiple of the clients ({clients}): hey's -q is int")
    groups = max(1, min(groups, clients))
    sizes = [clients // groups + (1 if g < clients % groups else 0) for g in range(groups)]
    gap = 1.0 / (groups * per_worker)
    request_timeout = max(1, round(timeout_s))
    argv_of = [
        [hey, "-c", str(c), "-n", str(c * seconds * per_worker), "-q", str(per_worker)]
        + ["-t", str(request_timeout), "-m", "POST", "-T", "application/json", "-d", body]
        + [a for k, v in headers.items() for a in ("-H", f"{k}: {v}")]
        + ["-o", "csv", url]
        for c in sizes
    ]
    procs: list[tuple[subprocess.Popen[bytes], float, Path]] = []
    outdir = Path(tempfile.mkdtemp(prefix="semantest-hey-"))
    # Worst case: every request of a worker waits the whole request timeout.
    deadline = time.monotonic() + seconds * (1 + request_timeout) + groups * gap + 30
    try:
        first = time.perf_counter()
        for g, argv in enumerate(argv_of):
            pause = first + g * gap - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            out = outdir / f"hey-{g}.csv"
            with out.open("wb") as sink:
                proc = subprocess.Popen(
                    argv, stdout=sink, stderr=subprocess.STDOUT, process_group=0
                )
            procs.append((proc, time.perf_counter(), out))
        for proc, _started, _out in procs:
            left = deadline - time.monotonic()
            try:
                proc.wait(max(0.1, left))
            except subprocess.TimeoutExpired:
                raise SystemExit("hey did not finish in time; killed it") from None
        sends: list[float] = []
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        for proc, started, out in procs:
            text = out.read_text(errors="replace")
            if proc.returncode != 0:
                raise SystemExit(f"hey exited with {proc.returncode}:\n{text[-2000:]}")
            for row in csv.DictReader(io.StringIO(text)):
                code = int(row["status-code"])
                statuses[code] = statuses.get(code, 0) + 1
                latencies.append(float(row["response-time"]) * 1000)
                sends.append(started - first + float(row["offset"]))
    finally:
        for proc, _started, _out in procs:
            _kill_group(proc)
        shutil.rmtree(outdir, ignore_errors=True)
    sent = clients * seconds * per_worker
    accepted = statuses.pop(expect, 0)
    errors = {f"HTTP {code}": n for code, n in sorted(statuses.items())}
    unanswered = sent - accepted - sum(errors.values())
    if unanswered:
        errors["no answer (socket error or timeout)"] = unanswered
    # The rate is taken over the span of the sends plus one gap between bursts (the schedule
    # sends a burst every `gap` seconds, so n bursts take n gaps): a worker that waits for a
    # slow answer sends its next request late, which stretches the span and lowers the rate.
    span = (max(sends) - min(sends) + gap) if sends else 0.0
    return Load(
        tool="hey",
        sent=sent,
        accepted=accepted,
        errors=errors,
        seconds=span,
        p50_ms=percentile(latencies, 50) if latencies else 0.0,
        p99_ms=percentile(latencies, 99) if latencies else 0.0,
        offered_per_s=float(rate),
        command=f"{groups} x hey -c {sizes[0]} -q {per_worker} -n {sizes[0] * seconds} "
        f"-t {request_timeout} -m POST -o csv, started {gap * 1000:.0f} ms apart",
    )


#: wrk's Lua hooks: the request (method, body, headers from the environment) and, at the end,
#: wrk's summary and latency percentiles as one JSON line (`WRK_RESULT {...}`).
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("WRK_AUTH")

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d,'
    .. ' "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def wrk_closed_loop(
    url: str,
    authorization: str,
    body: str,
    *,
    connections: int,
    seconds: int,
    threads: int,
    timeout_s: float,
) -> Load:
    """`connections` wrk connections sending back to back for `seconds`."""
    loopback_only(url)
    wrk = tool("wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    argv = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"]
    argv += ["--timeout", f"{timeout_s:g}s", "--latency", "-s", script.name, url]
    env = dict(os.environ, WRK_BODY=body, WRK_AUTH=authorization)
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=seconds + timeout_s + 30
        )
    except subprocess.TimeoutExpired:
        raise SystemExit("wrk did not finish in time; killed it") from None
    finally:
        os.unlink(script.name)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    r = json.loads(line.removeprefix("WRK_RESULT "))
    # wrk counts any status >= 400 as a `status` error; 2xx and 3xx as answered.
    errors = {
        "HTTP >= 400": r["status"],
        "socket connect": r["connect"],
        "socket read": r["read"],
        "socket write": r["write"],
        f"timeout (> {timeout_s:g} s)": r["timeout"],
    }
    shown = " ".join(a if " " not in a else repr(a) for a in argv[1:-1])
    return Load(
        tool="wrk",
        sent=r["requests"],
        accepted=r["requests"] - r["status"],
        errors={k: v for k, v in errors.items() if v},
        seconds=r["duration_us"] / 1e6,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        command=f"wrk {shown} <url>",
        notes=[f"max {r['max_us'] / 1000:.0f} ms"],
    )
