"""Fleet figures: slots scaling, memory, cold start and overhead under load, each vs an anchor.

    .venv/bin/python bench/fleet.py [--latency-ms 1000] [--jobs-per-slot 6] [--slots 1,2,4,8]
                                    [--busy 4] [--overhead-jobs 8] [--cold-runs 3] [--quick]
                                    [--workdir DIR]

One run, one machine, every figure next to an anchor measured in the same run:

1. **Throughput at K slots** (one agent, one browser, K tab slots). After a warm-up round (one
   job per slot), K x jobs-per-slot jobs are submitted at once (POST /api/v1/images/generate,
   one after another as fast as the controller answers) and timed from the first submit to the
   last record's `finishedAt`. Anchor: K x the K=1 throughput; target ratio ≥ 0.8.
2. **Memory.** PSS (from /proc) of the agent process and all its descendants (Playwright's
   node driver, Chromium's processes), measured 1 s after the throughput run with the K slot
   pages open. One slot: target ≤ 450 MB; anchor: a bare Python + Playwright process holding
   Chromium with the same flags and the extension on a copy of the agent's prepared profile,
   one sandbox page open. Per extra slot: (PSS at K - PSS at 1) / (K - 1), target ≤ 20 MB;
   anchor: the PSS one extra `about:blank` tab costs in a bare Playwright Chromium launched with
   `CHROMIUM_ARGS` (average over several extra tabs). The cost of an extra bare tab on the
   sandbox page is printed too, for reference.
3. **Cold start** (`readyAfterS` of the agent's heartbeat: process start → browser, extension
   and slot ready), one slot, on a new profile copied from the template
   (`<data>/profiles/agent-1` deleted, `_template` kept) and on the prepared profile the
   previous agent left; median of `--cold-runs`. Target ≤ 1 s. Anchor: a bare Python process
   that imports Playwright and calls `launch_persistent_context` with the extension on a copy
   of the prepared profile until the extension's service worker is up, timed the same way
   (from its process start).
4. **Overhead under load**: `--busy` client loops (default 4, = 4 slots busy) each submit a job
   and wait for it, on an agent with that many slots; per job (finishedAt - submit) - sandbox
   latency. Anchor: bare Playwright doing the same UI steps (bench/e2e.py's in-page script) in
   as many concurrent pages of one browser, per job (start → image bytes) - latency. Target:
   stack p50/p95 ≤ 1.3 x the anchor's.

How the stack is run: one `Stack` (redis-server, controller, sandbox) for the whole run, in a
temporary data dir, with no pool; each measurement starts its own fresh agent process
(`python -m agents --name agent-1 --slots K`, what the pool supervisor runs) and stops it
afterwards, so every K gets a new browser and its PSS is that of exactly K slots. Job records
are read straight from Redis (`semantest:job:<id>`, one MGET per poll) so that polling does not
load the controller that shares the CPU. Every job's stored sha256 is checked against the PNG
the sandbox renders for its prompt, outside the timed windows. The template profile is
prepared (`ensure_template`) by the bench before any agent starts, as a deployment would have
it. Agents run with `SEMANTEST_RECYCLE_MEMORY_MB=0` and `SEMANTEST_RECYCLE_AFTER_JOBS=0`, so
no agent recycles itself in the middle of a measurement. `--workdir DIR` keeps the data dir
(profiles, agent logs) instead of a temporary one.

Memory is also printed per process (python agent, node driver, each Chromium `--type`), with
PSS split into anonymous and file-backed pages: file pages (mostly the Chromium binary) are
shared with every other Chromium on the machine, so on a busy machine the PSS of the same tree
drops as others start; the anon+shmem part does not, and the per-slot figure is printed for it
too.

`--quick` (latency 200 ms, K=1,2, 2 jobs per slot, 2 busy, one cold-start run) only keeps the
script working (tests/e2e/test_bench.py); its figures mean little.

Exit status 0 when every job succeeded with the exact bytes; missed targets do not fail it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from e2e import IN_PAGE_STEPS, memory_kb, percentile
from playwright.async_api import Page, async_playwright

from browser_profiles.extension import launch_args
from browser_profiles.templates import SINGLETON_FILES, chromium_version, ensure_template
from extension_bridge import EXTENSION_DIR
from sandbox.render import render_png
from semantest import keys
from semantest.config import CHROMIUM_ARGS, Settings
from semantest.stack import Child, Stack, free_port

REPO = Path(__file__).resolve().parents[1]
AGENT_ID = "agent-1"
#: Seconds to let memory settle before reading PSS.
SETTLE_S = 1.0

# -- a bare browser in its own Python process (the cold-start and memory anchors) ---------------

#: Run as `python -c ANCHOR_CHILD '<json config>'`. Imports only Playwright, launches Chromium
#: (persistent context on `profile` when given, with `args`), waits for the extension's service
#: worker when `extension` is set, prints `ready <process age s> <launch s>`, then serves
#: `open <url>` (new page, navigate, print `ok`) until `quit` or end of input.
ANCHOR_CHILD = r"""
import asyncio, json, os, sys, time

def process_age_s():
    ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    uptime = float(open("/proc/uptime").read().split()[0])
    return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))

from playwright.async_api import async_playwright

async def main(cfg):
    async with async_playwright() as pw:
        launched = time.perf_counter()
        options = dict(executable_path=cfg["chromium"], headless=True, args=cfg["args"])
        if cfg["profile"]:
            context = await pw.chromium.launch_persistent_context(
                cfg["profile"], viewport={"width": 1280, "height": 900}, **options)
        else:
            browser = await pw.chromium.launch(**options)
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
        if cfg["extension"]:
            if not any(w.url.startswith("chrome-extension://") for w in context.service_workers):
                await context.wait_for_event(
                    "serviceworker", predicate=lambda w: w.url.startswith("chrome-extension://"))
        print("ready", process_age_s(), time.perf_counter() - launched, flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            command, _, argument = line.partition(" ")
            if command != "open":
                break
            page = await context.new_page()
            await page.goto(argument)
            print("ok", flush=True)
        await context.close()

asyncio.run(main(json.loads(sys.argv[1])))
"""


class BareBrowser:
    """The anchor child process; `pid` is the root of its process tree (python, node, chromium)."""

    def __init__(
        self, chromium: str, args: list[str], profile: Path | None, extension: bool
    ) -> None:
        config = {
            "chromium": chromium,
            "args": args,
            "profile": str(profile) if profile else None,
            "extension": extension,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ANCHOR_CHILD, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd="/",  # nothing of the repo on its path: it imports Playwright only
        )
        self.pid = self.proc.pid
        words = self._line("ready").split()
        self.ready_after_s, self.launch_s = float(words[1]), float(words[2])

    def _line(self, expected: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(expected):
            self.proc.kill()
            raise SystemExit(f"anchor browser: expected {expected!r}, got {line!r}")
        return line

    def open(self, url: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"open {url}\n")
        self.proc.stdin.flush()
        self._line("ok")

    def pss_mb(self) -> float:
        time.sleep(SETTLE_S)
        return memory_kb(self.pid)["Pss"] / 1024

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# -- the per-process picture ------------------------------------------------------------------


def process_tree(pid: int) -> list[tuple[int, int, str, dict[str, float]]]:
    """(pid, depth, label, PSS MB by kind) of `pid` and its descendants, parents first.

    The kinds are smaps_rollup's `Pss`, `Pss_Anon`, `Pss_File` and `Pss_Shmem`. `Pss_File` (the
    Chromium binary's pages above all) is split with every other process mapping the same
    file, so it shrinks when other Chromiums run on the machine; anonymous memory does not.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    rows: list[tuple[int, int, str, dict[str, float]]] = []
    todo = [(pid, 0)]
    while todo:
        current, depth = todo.pop()
        todo.extend((c, depth + 1) for c in sorted(children.get(current, []), reverse=True))
        try:
            rows.append((current, depth, process_label(current), pss_mb_of(current)))
        except OSError:
            continue
    return rows


PSS_KINDS = ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")


def pss_mb_of(pid: int) -> dict[str, float]:
    """PSS (MB) of one process, by kind (see `process_tree`)."""
    found = dict.fromkeys(PSS_KINDS, 0.0)
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in found:
            found[name] = int(rest.split()[0]) / 1024
    return found


def tree_pss(pid: int) -> dict[str, float]:
    """PSS (MB) of a process tree, by kind."""
    rows = process_tree(pid)
    return {kind: sum(r[3][kind] for r in rows) for kind in PSS_KINDS}


def other_chromiums(*roots: int) -> int:
    """Chromium processes on this machine outside the given trees (they share file pages)."""
    ours = {row[0] for root in roots for row in process_tree(root)}
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in ours:
            with contextlib.suppress(OSError):
                count += "chrom" in Path(os.readlink(f"/proc/{entry}/exe")).name
    return count


def process_label(pid: int) -> str:
    """What a process of an agent tree is: python, node driver, or chromium and its --type."""
    exe = Path(os.readlink(f"/proc/{pid}/exe")).name
    # Chromium rewrites its command line as one space-separated title (sometimes cut short).
    words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().split()

    def flag(name: str) -> str:
        return next((w.split("=", 1)[1] for w in words if w.startswith(f"--{name}=")), "")

    if exe.startswith("python"):
        if "-m" in words:
            at = words.index("-m")
            return "python -m " + " ".join(words[at + 1 : at + 4])
        return "python -c (bare anchor script)" if "-c" in words else "python"
    if exe == "node":
        return "node (Playwright driver)"
    if "chrom" not in exe:
        return exe
    kind = flag("type")
    if not kind:  # title cut short: tell the kind by flags only it carries
        kind = (
            "renderer"
            if flag("renderer-client-id")
            else "gpu-process"
            if flag("gpu-preferences")
            else "utility"
            if flag("utility-sub-type")
            else "zygote"
            if "--no-zygote-sandbox" in words
            else "browser"
            if "--remote-debugging-pipe" in words and not flag("field-trial-handle")
            else "?"
        )
    extra = [flag("utility-sub-type")]
    if "--extension-process" in words:
        extra.append("extension")
    if "--top-chrome-webui" in words:
        extra.append("WebUI")
    details = ", ".join(e for e in extra if e)
    return f"chromium --type={kind}" + (f" ({details})" if details else "")


def print_tree(title: str, pid: int) -> None:
    rows = process_tree(pid)
    total = {kind: sum(r[3][kind] for r in rows) for kind in PSS_KINDS}
    print(
        f"{title}: {total['Pss']:.0f} MB PSS in {len(rows)} processes "
        f"(anon {total['Pss_Anon']:.0f}, file {total['Pss_File']:.0f}, "
        f"shmem {total['Pss_Shmem']:.0f}; {other_chromiums(pid)} other Chromium processes "
        "on this machine)"
    )
    print("      PSS     anon      pid  process")
    for child, depth, label, pss in rows:
        print(f"  {pss['Pss']:7.1f} {pss['Pss_Anon']:7.1f} MB {child:>7}  {'  ' * depth}{label}")


# -- the stack side ---------------------------------------------------------------------------


@dataclass
class Agent:
    """One agent process started by the bench."""

    child: Child
    pid: int
    ready_after_s: float
    slots: int


def start_agent(stack: Stack, r: redis.Redis, slots: int, label: str) -> Agent:
    """Start `python -m agents --name agent-1 --slots K` and wait for its first heartbeat."""
    argv = [sys.executable, "-m", "agents", "--name", AGENT_ID, "--slots", str(slots)]
    child = stack.spawn(f"agent-{label}", argv)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise SystemExit(f"agent exited ({child.proc.returncode}):\n{child.tail()}")
        raw = r.get(keys.agent(AGENT_ID))
        beat = json.loads(raw) if raw else {}
        if beat.get("pid") == child.proc.pid and beat.get("state") == "ready":
            return Agent(child, child.proc.pid, float(beat["readyAfterS"]), slots)
        time.sleep(0.05)
    child.proc.kill()
    raise SystemExit(f"agent ({slots} slots) not ready after 120 s:\n{child.tail()}")


def stop_agent(stack: Stack, r: redis.Redis, agent: Agent) -> None:
    """SIGTERM (the agent drains, closes its browser and releases its profile), wait for exit."""
    proc = agent.child.proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    stack.children.remove(agent.child)
    r.delete(keys.agent(AGENT_ID))


@dataclass
class Submitted:
    prompt: str
    job_id: str
    submitted: float
    record: dict[str, object] = field(default_factory=dict)

    @property
    def finished(self) -> float:
        return float(self.record["finishedAt"])  # type: ignore[arg-type]


def submit(client: httpx.Client, prompt: str) -> Submitted:
    submitted = time.time()
    reply = client.post("/api/v1/images/generate", json={"prompt": prompt})
    reply.raise_for_status()
    return Submitted(prompt, reply.json()["jobId"], submitted)


def wait_all(
    r: redis.Redis,
    jobs: list[Submitted],
    agent: Agent,
    timeout: float = 600,
    poll: float = 0.05,
) -> None:
    """Fill each job's record once it succeeded; exit on a failed job or a dead agent."""
    pending = {j.job_id: j for j in jobs}
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(pending)} job(s) not done after {timeout:.0f} s")
        if agent.child.proc.poll() is not None:
            raise SystemExit(
                f"the agent exited ({agent.child.proc.returncode}) with {len(pending)} job(s) "
                f"left; its log ends with:\n{agent.child.tail()}"
            )
        ids = list(pending)
        for job_id, raw in zip(ids, r.mget([keys.job(i) for i in ids]), strict=True):
            record = json.loads(raw) if raw else {}
            status = record.get("status")
            if status == "succeeded":
                pending.pop(job_id).record = record
            elif status in ("failed", "canceled"):
                raise SystemExit(f"job {job_id} {status}: {record.get('error')}")
        if pending:
            time.sleep(poll)


def check_bytes(jobs: list[Submitted]) -> None:
    for job in jobs:
        images = job.record["images"]
        assert isinstance(images, list)
        if images[0]["sha256"] != hashlib.sha256(render_png(job.prompt)).hexdigest():
            raise SystemExit(f"job {job.job_id}: stored bytes differ from the sandbox's PNG")


def throughput(
    client: httpx.Client, r: redis.Redis, prompts: list[str], agent: Agent
) -> tuple[float, float]:
    """(jobs/s, seconds) for a batch submitted at once, after one warm-up job per slot."""
    warm = [submit(client, p) for p in prompts[: agent.slots]]
    wait_all(r, warm, agent)
    batch = [submit(client, p) for p in prompts[agent.slots :]]
    wait_all(r, batch, agent)
    took = max(j.finished for j in batch) - batch[0].submitted
    check_bytes(warm + batch)
    return len(batch) / took, took


def closed_loop(
    stack: Stack,
    r: redis.Redis,
    agent: Agent,
    prompts_per_client: list[list[str]],
    latency_s: float,
) -> list[float]:
    """Each client submits a job and waits for it, then the next: per-job overhead (ms)."""
    results: list[list[Submitted]] = [[] for _ in prompts_per_client]
    errors: list[BaseException] = []

    def loop(n: int) -> None:
        headers = {"Authorization": f"Bearer {stack.admin_key}"}
        try:
            with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as client:
                for prompt in prompts_per_client[n]:
                    job = submit(client, prompt)
                    wait_all(r, [job], agent, poll=0.02)
                    results[n].append(job)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(len(prompts_per_client))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    jobs = [j for per_client in results for j in per_client[1:]]  # first one each: warm-up
    check_bytes([j for per_client in results for j in per_client])
    return [(j.finished - j.submitted - latency_s) * 1000 for j in jobs]


# -- the bare-Playwright anchors --------------------------------------------------------------


async def anchor_concurrent(
    chromium: str, sandbox_url: str, prompts_per_page: list[list[str]], latency_s: float
) -> list[float]:
    """bench/e2e.py's in-page anchor in N concurrent pages of one browser: overhead (ms) per job
    (typing the prompt → holding the image bytes, minus the latency), first job per page not
    counted."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS)
        )
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        pages = [await context.new_page() for _ in prompts_per_page]
        await asyncio.gather(*(p.goto(f"{sandbox_url}/chat") for p in pages))
        got: list[tuple[str, bytes]] = []

        async def run(page: Page, prompts: list[str]) -> list[float]:
            times = []
            for prompt in prompts:
                started = time.time()
                src = await page.evaluate(IN_PAGE_STEPS, prompt)
                body = await (await context.request.get(src)).body()
                times.append((time.time() - started - latency_s) * 1000)
                got.append((prompt, body))
            return times[1:]

        per_page = await asyncio.gather(
            *(run(p, prompts) for p, prompts in zip(pages, prompts_per_page, strict=True))
        )
        await browser.close()
    for prompt, body in got:
        if body != render_png(prompt):
            raise SystemExit("anchor: image bytes differ from the sandbox's PNG")
    return [t for times in per_page for t in times]


def anchor_tabs(chromium: str, sandbox_url: str, extra: int) -> tuple[dict[str, float], ...]:
    """PSS (MB, by kind) of a bare Chromium (same flags) with one about:blank tab, and the
    average cost of one extra about:blank tab and of one extra sandbox-page tab."""
    bare = BareBrowser(chromium, list(CHROMIUM_ARGS), None, extension=False)
    try:
        bare.open("about:blank")
        base = {**tree_pss(bare.pid), "Pss": bare.pss_mb()}
        for _ in range(extra):
            bare.open("about:blank")
        blanks = {**tree_pss(bare.pid), "Pss": bare.pss_mb()}
        for _ in range(extra):
            bare.open(f"{sandbox_url}/chat")
        sandboxes = {**tree_pss(bare.pid), "Pss": bare.pss_mb()}
        print_tree(
            f"anchor, bare Chromium with 1 + {extra} about:blank + {extra} sandbox tabs", bare.pid
        )
    finally:
        bare.close()
    blank = {k: (blanks[k] - base[k]) / extra for k in PSS_KINDS}
    sandbox = {k: (sandboxes[k] - blanks[k]) / extra for k in PSS_KINDS}
    return base, blank, sandbox


def copy_profile(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns(*SINGLETON_FILES))


# -- report -----------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    value: float
    unit: str
    target: str
    anchor: str
    ratio: float | None
    miss: str  # empty when the target is met


def met(value: float, limit: float, unit: str, *, at_most: bool = True) -> str:
    if (value <= limit) if at_most else (value >= limit):
        return ""
    return f"{abs(value - limit):.2f}{unit} {'over' if at_most else 'under'}"


def print_table(rows: list[Row]) -> None:
    header = ("figure", "value", "target", "anchor (same run)", "ratio", "met")
    cells = [
        (
            r.label,
            f"{r.value:.2f} {r.unit}",
            r.target,
            r.anchor,
            "n/a" if r.ratio is None else f"{r.ratio:.2f}x",
            "yes" if not r.miss else f"NO ({r.miss})",
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    print(line.format(*header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        print(line.format(*c))


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def overhead_miss(value: float | None) -> str:
    if value is None:
        return "anchor overhead <= 0"
    return "" if value <= 1.3 else f"{value - 1.3:.2f}x over"


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=int, default=None, help="sandbox latency (1000)")
    parser.add_argument("--jobs-per-slot", type=int, default=None, help="measured jobs/slot (6)")
    parser.add_argument("--slots", default=None, help="slot counts to measure (1,2,4,8)")
    parser.add_argument("--busy", type=int, default=None, help="busy slots for overhead (4)")
    parser.add_argument("--overhead-jobs", type=int, default=None, help="jobs per busy slot (8)")
    parser.add_argument("--cold-runs", type=int, default=None, help="cold starts of each kind (3)")
    parser.add_argument("--quick", action="store_true", help="tiny counts, K=1,2, 200 ms")
    parser.add_argument(
        "--workdir", type=Path, help="keep data, profiles and logs here (default: a temp dir)"
    )
    args = parser.parse_args()
    quick = {"latency_ms": 200, "jobs_per_slot": 2, "slots": "1,2", "busy": 2}
    quick |= {"overhead_jobs": 2, "cold_runs": 1}
    full = {"latency_ms": 1000, "jobs_per_slot": 6, "slots": "1,2,4,8", "busy": 4}
    full |= {"overhead_jobs": 8, "cold_runs": 3}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    slot_counts = sorted({int(k) for k in str(args.slots).split(",")})
    if slot_counts[0] != 1:
        slot_counts.insert(0, 1)  # every ratio needs K=1
    latency_s = args.latency_ms / 1000
    settings = Settings()
    chromium = settings.chromium
    if not chromium:
        raise SystemExit("Chromium is not installed: run `make setup`")
    tag = uuid.uuid4().hex[:6]
    python = sys.executable
    if python.startswith(str(REPO) + os.sep):
        python = os.path.relpath(python, REPO)
    command = shlex.join([python, "bench/fleet.py", *sys.argv[1:]])
    print(f"command: {command}")
    print(
        f"machine: {os.cpu_count()} CPUs, {chromium_version(chromium)}, Python "
        f"{sys.version.split()[0]}, {datetime.datetime.now().isoformat(timespec='seconds')}"
    )
    print(
        f"latency {args.latency_ms} ms, slots {slot_counts}, {args.jobs_per_slot} jobs/slot, "
        f"overhead with {args.busy} busy x {args.overhead_jobs} jobs, {args.cold_runs} cold runs"
    )
    rows: list[Row] = []

    with contextlib.ExitStack() as cleanup:
        if args.workdir:
            shutil.rmtree(args.workdir, ignore_errors=True)
            args.workdir.mkdir(parents=True)
            tmp = str(args.workdir.resolve())
        else:
            tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="semantest-fleet-"))
        settings = settings.model_copy(
            update={
                "redis_url": None,
                "data_dir": Path(tmp) / "data",
                "port": free_port(),
                "sandbox_port": free_port(),
                "sandbox_latency_ms": args.latency_ms,
                # no recycling in the middle of a measurement
                "recycle_memory_mb": 0,
                "recycle_after_jobs": 0,
            }
        )
        started = time.perf_counter()

        async def prepare() -> None:
            async with async_playwright() as pw:
                await ensure_template(
                    pw,
                    chromium=chromium,
                    extension_dir=EXTENSION_DIR,
                    template_dir=settings.template_dir,
                )

        asyncio.run(prepare())
        print(f"template profile prepared in {time.perf_counter() - started:.2f} s")
        profile = settings.profiles_dir / AGENT_ID
        with Stack(settings, agents=0, persist_redis=False) as stack:
            r = redis.Redis.from_url(stack.settings.redis_url or "")
            headers = {"Authorization": f"Bearer {stack.admin_key}"}
            client = httpx.Client(base_url=stack.url, headers=headers, timeout=30)
            sandbox_url = stack.settings.sandbox_url

            # 3. cold start: new profile (from the template) and prepared profile, one slot
            new_s, prepared_s = [], []
            for n in range(args.cold_runs):
                shutil.rmtree(profile, ignore_errors=True)
                agent = start_agent(stack, r, 1, f"cold-new-{n}")
                new_s.append(agent.ready_after_s)
                stop_agent(stack, r, agent)
                agent = start_agent(stack, r, 1, f"cold-prepared-{n}")
                prepared_s.append(agent.ready_after_s)
                stop_agent(stack, r, agent)
            print(f"cold start new profile: {', '.join(f'{s:.2f}' for s in new_s)} s")
            print(f"cold start prepared profile: {', '.join(f'{s:.2f}' for s in prepared_s)} s")

            # cold-start and one-slot memory anchor: bare launch, extension, prepared profile
            anchor_profile = Path(tmp) / "anchor-profile"
            copy_profile(profile, anchor_profile)
            ext_args = launch_args(EXTENSION_DIR)
            bare_ready, bare_launch, bare_pss = [], [], []
            for n in range(args.cold_runs):
                bare = BareBrowser(chromium, ext_args, anchor_profile, extension=True)
                bare_ready.append(bare.ready_after_s)
                bare_launch.append(bare.launch_s)
                bare.open(f"{sandbox_url}/chat")
                bare_pss.append(bare.pss_mb())
                if n == args.cold_runs - 1:
                    print_tree("anchor, bare Chromium + extension + 1 sandbox page", bare.pid)
                bare.close()
            print(
                "anchor cold start (process start -> service worker up): "
                f"{', '.join(f'{s:.2f}' for s in bare_ready)} s; of which launch -> worker "
                f"{', '.join(f'{s:.2f}' for s in bare_launch)} s"
            )

            # 1, 2 and 4: one fresh agent per K
            thr: dict[int, float] = {}
            pss: dict[int, float] = {}
            anon: dict[int, float] = {}
            overhead: list[float] = []
            for k in slot_counts:
                agent = start_agent(stack, r, k, f"k{k}")
                prompts = [
                    f"fleet {tag} k{k} prompt {i}" for i in range(k * (1 + args.jobs_per_slot))
                ]
                thr[k], took = throughput(client, r, prompts, agent)
                time.sleep(SETTLE_S)
                pss[k] = memory_kb(agent.pid)["Pss"] / 1024
                kinds = tree_pss(agent.pid)
                anon[k] = kinds["Pss_Anon"] + kinds["Pss_Shmem"]
                rss = memory_kb(agent.pid)["Rss"] / 1024
                print(
                    f"K={k}: {len(prompts) - k} jobs in {took:.2f} s = {thr[k]:.3f} jobs/s; "
                    f"agent PSS {pss[k]:.0f} MB (anon+shmem {anon[k]:.0f}, file "
                    f"{kinds['Pss_File']:.0f}); summed RSS {rss:.0f} MB; ready after "
                    f"{agent.ready_after_s:.2f} s"
                )
                if k in (1, slot_counts[-1]):
                    print_tree(f"agent with {k} slot(s), after its throughput run", agent.pid)
                if k == args.busy:
                    overhead = run_overhead(stack, r, agent, tag, args, latency_s)
                stop_agent(stack, r, agent)
            if args.busy not in slot_counts:
                agent = start_agent(stack, r, args.busy, f"busy{args.busy}")
                overhead = run_overhead(stack, r, agent, tag, args, latency_s)
                stop_agent(stack, r, agent)

            # anchors for memory per tab and for overhead under load
            extra = max(2, slot_counts[-1] - 1)
            tab_base, blank, sandbox_tab = anchor_tabs(chromium, sandbox_url, extra)
            blank_tab = blank["Pss"]
            print(
                f"anchor, bare Chromium (CHROMIUM_ARGS): {tab_base['Pss']:.0f} MB with one "
                f"about:blank tab; per extra about:blank tab +{blank_tab:.1f} MB (anon+shmem "
                f"{blank['Pss_Anon'] + blank['Pss_Shmem']:.1f}), per extra sandbox-page tab "
                f"+{sandbox_tab['Pss']:.1f} MB (anon+shmem "
                f"{sandbox_tab['Pss_Anon'] + sandbox_tab['Pss_Shmem']:.1f}); "
                f"average over {extra} of each"
            )
            pages = [
                [f"fleet {tag} anchor page {p} prompt {i}" for i in range(1 + args.overhead_jobs)]
                for p in range(args.busy)
            ]
            anchor_overhead = asyncio.run(
                anchor_concurrent(chromium, sandbox_url, pages, latency_s)
            )
            client.close()
            r.close()

    # -- the table
    one = thr[1]
    for k in slot_counts:
        rows.append(
            Row(
                f"throughput K={k}",
                thr[k],
                "jobs/s",
                "ratio >= 0.80",
                f"{k} x K=1 = {k * one:.3f} jobs/s",
                thr[k] / (k * one),
                met(thr[k] / (k * one), 0.8, "", at_most=False),
            )
        )
    anchor_one = statistics.median(bare_pss)
    rows.append(
        Row(
            "PSS 1 agent, 1 slot",
            pss[1],
            "MB",
            "<= 450 MB",
            f"bare Chromium+ext, 1 page: {anchor_one:.0f} MB",
            ratio(pss[1], anchor_one),
            met(pss[1], 450, " MB"),
        )
    )
    for k in slot_counts[1:]:
        per_slot = (pss[k] - pss[1]) / (k - 1)
        rows.append(
            Row(
                f"PSS per extra slot K={k}",
                per_slot,
                "MB",
                "<= 20 MB",
                f"extra about:blank tab: {blank_tab:.1f} MB",
                ratio(per_slot, blank_tab),
                met(per_slot, 20, " MB"),
            )
        )
    anchor_cold = statistics.median(bare_ready)
    for label, samples in (("new profile", new_s), ("prepared profile", prepared_s)):
        value = statistics.median(samples)
        rows.append(
            Row(
                f"cold start, {label}",
                value,
                "s",
                "<= 1.00 s",
                f"bare launch+ext, prepared: {anchor_cold:.2f} s",
                ratio(value, anchor_cold),
                met(value, 1.0, " s"),
            )
        )
    for q in (50, 95):
        ours, base = percentile(overhead, q), percentile(anchor_overhead, q)
        rows.append(
            Row(
                f"overhead p{q}, {args.busy} busy",
                ours,
                "ms",
                "ratio <= 1.30",
                f"bare PW {args.busy} pages: {base:.1f} ms",
                ratio(ours, base),
                overhead_miss(ratio(ours, base)),
            )
        )
    print()
    print(
        "per extra slot, anon+shmem PSS only (not shared with other Chromiums on the machine): "
        + ", ".join(f"K={k} {(anon[k] - anon[1]) / (k - 1):.1f} MB" for k in slot_counts[1:])
    )
    print(f"command: {command}")
    print(
        f"overhead samples: stack n={len(overhead)}, anchor n={len(anchor_overhead)}; "
        f"cold-start and anchor PSS figures are medians of {args.cold_runs} run(s)"
    )
    print_table(rows)
    return 0


def run_overhead(
    stack: Stack,
    r: redis.Redis,
    agent: Agent,
    tag: str,
    args: argparse.Namespace,
    latency_s: float,
) -> list[float]:
    """Overhead (ms) per job with `args.busy` client loops on an agent with that many slots."""
    prompts = [
        [f"fleet {tag} busy client {c} prompt {i}" for i in range(1 + args.overhead_jobs)]
        for c in range(args.busy)
    ]
    overhead = closed_loop(stack, r, agent, prompts, latency_s)
    print(
        f"overhead with {args.busy} busy: p50 {percentile(overhead, 50):.1f} ms, "
        f"p95 {percentile(overhead, 95):.1f} ms (n={len(overhead)})"
    )
    return overhead


if __name__ == "__main__":
    sys.exit(main())
