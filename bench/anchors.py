"""The anchors of bench/fleet.py: a bare browser with the extension in its own process (cold start,
memory) and bare-Playwright pages doing the same UI steps (overhead, memory per tab)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from e2e import IN_PAGE_STEPS, memory_kb
from playwright.async_api import Page, async_playwright
from processes import PSS_KINDS, print_tree, tree_pss

from browser_profiles.templates import SINGLETON_FILES
from sandbox.render import render_png
from semantest.config import CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[1]
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
