"""bench/submit.py runs (tiny phases) and prints every figure it promises, with 0 errors.

Speed is judged by `make bench-submit`, not here: this keeps the script, its load generators
(hey, wrk) and its anchors working.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "submit.py"
ROWS = (
    "open loop 100 clients: served",
    "open loop 100 clients: p50",
    "open loop 100 clients: p99",
    "open loop 100 clients: errors",
    "closed loop 100 conns: accepted",
    "closed loop 100 conns: accepted (vs RQ 1 by 1)",
    "closed loop 100 conns: accepted (vs LPUSH)",
    "closed loop 100 conns: p50",
    "closed loop 100 conns: p99",
    "closed loop 100 conns: errors",
)
BATCH_ROWS = ("batch of 100 accept p50", "batch of 100 accept p99", "batch of 100: errors")


def row(out: str, label: str) -> re.Match[str]:
    found = re.search(
        rf"^\| {re.escape(label)}\s+\| (-?[\d.]+) (\S+)\s+\| ([^|]*)\| ([^|]*)\|"
        rf" (-?[\d.]+x|n/a)\s+\| (yes|NO \([^)]*\))\s+\|$",
        out,
        re.M,
    )
    assert found, f"no row for {label!r} in:\n{out}"
    return found


def test_submit_bench_quick_prints_every_figure_with_no_errors() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--anchor-seconds", "0.5", "--timeout", "150"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert re.search(r"^command: \S*python\S* bench/submit.py --quick", out, re.M), out
    for label in ROWS:
        row(out, label)
    for label in ("open loop 100 clients: errors", "closed loop 100 conns: errors"):
        assert row(out, label)[1] == "0.00", out
    for label in ("open loop 100 clients: served", "closed loop 100 conns: accepted"):
        assert float(row(out, label)[1]) > 0, out
    # the anchors ran and gave figures
    assert re.search(r"^anchor RQ enqueue_many: \d+ jobs in [\d.]+ s = [1-9]\d* jobs/s", out, re.M)
    assert re.search(r"^anchor redis-benchmark -t lpush .*: [1-9]\d*/s", out, re.M), out
    assert re.search(r"^CPU during closed loop .*controller [\d.]+ cores", out, re.M), out
    for label in BATCH_ROWS:
        row(out, label)
    assert row(out, "batch of 100: errors")[1] == "0.00", out
    assert float(row(out, "batch of 100 accept p99")[1]) > 0, out
