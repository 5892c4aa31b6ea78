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
    cold = re.search(r"new profile ([\d.]+) s, prepared profile ([\d.]+) s", out)
    assert cold and 0 < float(cold[1]) < 60 and 0 < float(cold[2]) < 60, out
    pss = re.search(r"PSS of the agent \+ its Chromium\): (\d+) MB", out)
    assert pss and 50 < int(pss[1]) < 4000, out
