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
import os
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis
from anchors import BareBrowser, anchor_concurrent, anchor_tabs, copy_profile
from e2e import memory_kb, percentile
from fleet_stack import (
    AGENT_ID,
    Agent,
    closed_loop,
    start_agent,
    stop_agent,
    throughput,
)
from playwright.async_api import async_playwright
from processes import print_tree, tree_pss
from report import print_table, table_rows

from browser_profiles.extension import launch_args
from browser_profiles.templates import chromium_version, ensure_template
from extension_bridge import EXTENSION_DIR
from semantest.config import Settings
from semantest.stack import Stack, free_port

REPO = Path(__file__).resolve().parents[1]
#: Seconds to let memory settle before reading PSS.
SETTLE_S = 1.0

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

    rows = table_rows(
        slot_counts,
        thr,
        pss,
        bare_pss,
        blank_tab,
        {"new profile": new_s, "prepared profile": prepared_s},
        bare_ready,
        overhead,
        anchor_overhead,
        args.busy,
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
