"""End-to-end overhead: N jobs through the whole stack vs the same UI steps in bare Playwright.

    .venv/bin/python bench/e2e.py [--jobs 20] [--latency-ms 0] [--warmup 2]

Measured in one run, on this machine:

* **stack**: for each prompt, POST /api/v1/images/generate, then poll until `succeeded`. The
  time is submit (client clock, before the POST) → the record's `finishedAt` (set by the agent
  when it records the result; same machine, same clock), so status polling adds nothing. Jobs
  go one at a time (one agent, one slot), so no job waits in the queue behind another.
* **anchor**: a bare Playwright script — same Debian Chromium and flags, no extension, no Redis,
  no controller — types the same prompt into the same sandbox page, clicks send, waits for the
  generated image to load and downloads its bytes with the context's request client. That is
  the least any browser automation has to do to get the same image.

Both subtract the sandbox's configured latency, so "overhead" is what the automation adds over
the provider's own time. It also reports the agent's cold start (process start → slot ready,
as the agent measures it) on a new machine (no profile template yet: the first agent prepares
it) and on a prepared profile, and the memory of one agent with
one slot (PSS of the agent process, Playwright's driver and its Chromium processes).

Every run uses prompts of its own, so no run finds a PNG the sandbox has already rendered.

Exit status is 0 when every job succeeded with the exact bytes the sandbox renders.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis
from playwright.async_api import async_playwright

from sandbox.render import render_png
from semantest import keys
from semantest.config import CHROMIUM_ARGS, Settings
from semantest.stack import Stack, free_port


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def memory_kb(pid: int) -> dict[str, int]:
    """PSS and RSS (kB) of `pid` and all its descendants, from /proc, in one walk.

    PSS is the honest total: Chromium's processes share most of their pages, and a sum of
    their RSS counts those pages once per process.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    totals, todo = {"Pss": 0, "Rss": 0}, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                name, _, rest = line.partition(":")
                if name in totals:
                    totals[name] += int(rest.split()[0])
        except OSError:
            pass
    return totals


def run_stack(
    settings: Settings, prompts: list[str], warmup: int
) -> tuple[list[float], dict[str, float]]:
    """Seconds submit → succeeded for each prompt (warm-up jobs excluded) and agent figures."""
    times: list[float] = []
    with Stack(settings, agents=1, persist_redis=False) as stack:
        r = redis.Redis.from_url(stack.settings.redis_url or "")
        agent_info = json.loads(r.get(keys.agent("agent-1")) or "{}")
        headers = {"Authorization": f"Bearer {stack.admin_key}"}
        with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as client:
            for n, prompt in enumerate(prompts):
                submitted = time.time()
                reply = client.post("/api/v1/images/generate", json={"prompt": prompt})
                reply.raise_for_status()
                job_id = reply.json()["jobId"]
                record = wait_succeeded(client, job_id)
                if record["images"][0]["sha256"] != _expected(prompt).hex():
                    raise SystemExit(f"job {job_id}: stored bytes differ from the sandbox's PNG")
                if n >= warmup:
                    times.append(record["finishedAt"] - submitted)
        # the agent process itself (its pool supervisor is not part of one agent's memory)
        memory = memory_kb(int(agent_info["pid"]))
        figures = {
            "cold_start_s": float(agent_info.get("readyAfterS") or "nan"),
            "pss_mb": memory["Pss"] / 1024,
            "rss_mb": memory["Rss"] / 1024,
        }
        r.close()
    return times, figures


def wait_succeeded(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record: dict[str, object] = client.get(f"/api/v1/images/status/{job_id}").json()
        if record["status"] == "succeeded":
            return record
        if record["status"] in ("failed", "canceled"):
            raise SystemExit(f"job {job_id} {record['status']}: {record.get('error')}")
        time.sleep(0.02)
    raise SystemExit(f"job {job_id} not done after {timeout} s")


#: The same DOM steps the sandbox addon takes, run in the page by a bare script: type, send,
#: wait for the new reply's image to load (MutationObserver, no polling), return its URL.
IN_PAGE_STEPS = """async prompt => {
  const before = document.querySelectorAll('#thread .turn[data-role="assistant"]').length;
  const composer = document.querySelector('#composer'), send = document.querySelector('#send');
  composer.focus();
  document.execCommand('selectAll'); document.execCommand('insertText', false, prompt);
  send.click();
  const img = await new Promise(resolve => {
    const find = () => document.querySelectorAll('#thread .turn[data-role="assistant"]')[before]
      ?.querySelector('img.generated');
    const hit = find(); if (hit) return resolve(hit);
    const obs = new MutationObserver(() => {
      const i = find(); if (i) { obs.disconnect(); resolve(i); }
    });
    obs.observe(document.querySelector('#thread'), {childList: true, subtree: true});
  });
  if (!(img.complete && img.naturalWidth)) await img.decode();
  return img.src;
}"""


async def run_anchor(
    chromium: str, sandbox_url: str, prompts: list[str], warmup: int, *, locators: bool
) -> list[float]:
    """Seconds from typing a prompt to holding the image bytes, bare Playwright, per prompt.

    `locators=False` runs the steps as one in-page script (the fastest bare approach);
    `locators=True` uses Playwright's locator API (fill, click, wait_for) as a test author would.
    """
    times: list[float] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS)
        )
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        await page.goto(f"{sandbox_url}/chat")
        for n, prompt in enumerate(prompts):
            started = time.time()
            if locators:
                await page.locator("#composer").fill(prompt)
                await page.locator("#send").click()
                turn = page.locator('.turn[data-role="assistant"]').nth(n)
                img = turn.locator("img.generated")
                await img.wait_for(state="attached", timeout=120_000)
                src = await img.evaluate(
                    "async i => { if (!(i.complete && i.naturalWidth)) await i.decode(); "
                    "return i.src; }"
                )
            else:
                src = await page.evaluate(IN_PAGE_STEPS, prompt)
            response = await context.request.get(src)
            if hashlib.sha256(await response.body()).digest() != _expected(prompt):
                raise SystemExit("anchor: image bytes differ from the sandbox's PNG")
            if n >= warmup:
                times.append(time.time() - started)
        await browser.close()
    return times


def _expected(prompt: str) -> bytes:
    return hashlib.sha256(render_png(prompt)).digest()


def serve_sandbox(latency_ms: int) -> tuple[str, subprocess.Popen[bytes]]:
    """The sandbox provider in its own process on a free port, as the stack runs it."""
    port = free_port()
    env = {**os.environ, "SEMANTEST_SANDBOX_LATENCY_MS": str(latency_ms)}
    argv = [sys.executable, "-m", "sandbox", "--port", str(port)]
    proc = subprocess.Popen(argv, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the sandbox did not start")


def report(name: str, times: list[float], latency_s: float) -> tuple[float, float]:
    overhead = [(t - latency_s) * 1000 for t in times]
    p50, p95 = percentile(overhead, 50), percentile(overhead, 95)
    total = [t * 1000 for t in times]
    print(
        f"{name:<8} n={len(times):<3} total p50 {percentile(total, 50):7.1f} ms   "
        f"overhead p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  (mean {statistics.mean(overhead):.1f})"
    )
    return p50, p95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20, help="measured jobs (20)")
    parser.add_argument("--latency-ms", type=int, default=0, help="sandbox latency (0)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured first jobs (2)")
    args = parser.parse_args()
    settings = Settings()
    if not settings.chromium:
        raise SystemExit("Chromium is not installed: run `make setup`")
    tag = uuid.uuid4().hex[:6]

    def prompts_for(run: str) -> list[str]:
        return [f"bench {tag} {run} prompt {i}" for i in range(args.warmup + args.jobs)]

    latency_s = args.latency_ms / 1000

    with tempfile.TemporaryDirectory(prefix="semantest-bench-") as tmp:
        settings = settings.model_copy(
            update={
                "redis_url": None,
                "data_dir": Path(tmp),
                "port": free_port(),
                "sandbox_port": free_port(),
                "sandbox_latency_ms": args.latency_ms,
            }
        )
        print(f"stack: {args.jobs} jobs (+{args.warmup} warm-up), latency {args.latency_ms} ms")
        stack_times, new_profile = run_stack(settings, prompts_for("stack"), args.warmup)
        # Same data dir again: the agent's profile now exists (Allow User Scripts already on).
        settings = settings.model_copy(update={"port": free_port(), "sandbox_port": free_port()})
        _, prepared = run_stack(settings, prompts_for("prepared")[:1], warmup=1)

    sandbox_url, sandbox = serve_sandbox(args.latency_ms)
    chromium = settings.chromium or ""
    print("anchor: bare Playwright on the same sandbox page, same Chromium and flags")
    try:
        in_page = asyncio.run(
            run_anchor(chromium, sandbox_url, prompts_for("in-page"), args.warmup, locators=False)
        )
        by_locator = asyncio.run(
            run_anchor(chromium, sandbox_url, prompts_for("locators"), args.warmup, locators=True)
        )
    finally:
        sandbox.terminate()
        sandbox.wait()

    print()
    ours50, ours95 = report("stack", stack_times, latency_s)
    base50, base95 = report("anchor", in_page, latency_s)
    report("locators", by_locator, latency_s)
    print(
        f"ratio stack/anchor, total time: p50 "
        f"{percentile(stack_times, 50) / percentile(in_page, 50):.2f}x, p95 "
        f"{percentile(stack_times, 95) / percentile(in_page, 95):.2f}x"
        f"   (stack/locators p50 "
        f"{percentile(stack_times, 50) / percentile(by_locator, 50):.2f}x)"
    )
    print(
        f"our overhead beyond the anchor: p50 {ours50 - base50:+.1f} ms, "
        f"p95 {ours95 - base95:+.1f} ms"
        "   (target for overhead over the provider: p50 <= 100 ms, p95 <= 250 ms)"
    )
    print(
        f"agent cold start (process start -> slot ready): first agent on a new machine "
        f"(prepares the profile template) {new_profile['cold_start_s']:.2f} s, prepared "
        f"profile {prepared['cold_start_s']:.2f} s   (target: <= 1 s prepared; a new profile "
        f"copied from the template: bench/fleet.py)"
    )
    print(
        f"agent memory with one slot (PSS of the agent + its Chromium): "
        f"{new_profile['pss_mb']:.0f} MB (sum of RSS, shared pages counted per process: "
        f"{new_profile['rss_mb']:.0f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
