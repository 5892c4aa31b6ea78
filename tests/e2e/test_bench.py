"""The benchmark runs end to end (one job) and prints every figure it promises.

Speed is judged by `make bench`, not here: this only keeps the script from rotting.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench" / "e2e.py"


def test_bench_prints_overhead_anchor_cold_start_and_memory() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--jobs", "2", "--warmup", "0", "--latency-ms", "50"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for name in ("stack", "anchor", "locators"):
        assert re.search(rf"^{name}\s+n=2\s+total p50\s+[\d.]+ ms", out, re.M), out
    ratio = float(re.search(r"ratio stack/anchor, total time: p50 ([\d.]+)x", out, re.M)[1])
    assert ratio > 0
    cold = re.search(
        r"new machine \(prepares the profile template\) ([\d.]+) s, prepared profile ([\d.]+) s",
        out,
    )
    assert cold and 0 < float(cold[1]) < 60 and 0 < float(cold[2]) < 60, out
    pss = re.search(r"PSS of the agent \+ its Chromium\): (\d+) MB", out)
    assert pss and 50 < int(pss[1]) < 4000, out


FLEET = BENCH.with_name("fleet.py")
#: Every row bench/fleet.py --quick prints (K=1,2 and 2 busy slots).
FLEET_ROWS = (
    "throughput K=1",
    "throughput K=2",
    "PSS 1 agent, 1 slot",
    "PSS per extra slot K=2",
    "cold start, new profile",
    "cold start, prepared profile",
    "overhead p50, 2 busy",
    "overhead p95, 2 busy",
)


def test_fleet_bench_quick_prints_every_figure_with_target_anchor_and_ratio() -> None:
    done = subprocess.run(
        [sys.executable, str(FLEET), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert re.search(r"^command: \S*python\S* bench/fleet.py --quick$", out, re.M), out
    for label in FLEET_ROWS:
        row = re.search(
            rf"^\| {re.escape(label)}\s+\| (-?[\d.]+) (jobs/s|MB|s|ms)\s+\| ([^|]+)\| ([^|]+)\|"
            rf" (-?[\d.]+x|n/a)\s+\| (yes|NO \([^)]*\))\s+\|$",
            out,
            re.M,
        )
        assert row, f"no row for {label!r} in:\n{out}"
        float(row[1])
        assert row[3].strip() and row[4].strip()
        if row[5] != "n/a":
            float(row[5].rstrip("x"))
    # the figures that cannot be noise-negative are positive
    for label in ("throughput K=1", "PSS 1 agent, 1 slot", "cold start, new profile"):
        value = re.search(rf"^\| {re.escape(label)}\s+\| ([\d.]+) ", out, re.M)
        assert value and float(value[1]) > 0, out
