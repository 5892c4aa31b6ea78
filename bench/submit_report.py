"""The table bench/submit.py prints: each figure with its target, its anchor and their ratio."""

from __future__ import annotations

import argparse
import math

from e2e import percentile
from loadgen import Load
from redis_anchors import Benchmarked, Enqueued
from report import Row, met, ratio


def table(
    args: argparse.Namespace,
    opened: Load,
    closed: Load,
    batch_ms: list[float],
    batch_errors: dict[str, int],
    many: Enqueued,
    one: Enqueued,
    lpush: Benchmarked,
) -> list[Row]:
    """One row per figure: value, target, the anchor from the same run, ratio, met or not."""
    offered = opened.offered_per_s or 0.0
    served = ratio(opened.accepted_per_s, offered)
    open_label = f"open loop {args.clients} clients"
    closed_label = f"closed loop {args.connections} conns"
    one_anchor = f"RQ enqueue_call alone: p99 {one.p99_ms:.2f} ms"
    rows = [
        Row(
            f"{open_label}: served",
            opened.accepted_per_s,
            "req/s",
            f">= 99% of {offered:.0f}/s",
            f"offered {offered:.0f}/s",
            served,
            met(served or 0.0, 0.99, "", at_most=False),
        ),
        Row(f"{open_label}: p50", opened.p50_ms, "ms", "", one_anchor, None, ""),
        Row(
            f"{open_label}: p99",
            opened.p99_ms,
            "ms",
            "< 250 ms",
            one_anchor,
            ratio(opened.p99_ms, one.p99_ms),
            met(opened.p99_ms, 250, " ms"),
        ),
        _errors_row(f"{open_label}: errors", opened.error_count, opened.sent),
        Row(
            f"{closed_label}: accepted",
            closed.accepted_per_s,
            "jobs/s",
            ">= 2000 jobs/s",
            f"RQ enqueue_many (x100): {many.per_s:.0f} jobs/s",
            ratio(closed.accepted_per_s, many.per_s),
            met(closed.accepted_per_s, 2000, " jobs/s", at_most=False),
        ),
        Row(
            f"{closed_label}: accepted (vs RQ 1 by 1)",
            closed.accepted_per_s,
            "jobs/s",
            "",
            f"RQ enqueue_call, 1 at a time: {one.per_s:.0f} jobs/s",
            ratio(closed.accepted_per_s, one.per_s),
            "",
        ),
        Row(
            f"{closed_label}: accepted (vs LPUSH)",
            closed.accepted_per_s,
            "jobs/s",
            "",
            f"redis-benchmark LPUSH: {lpush.per_s:.0f}/s",
            ratio(closed.accepted_per_s, lpush.per_s),
            "",
        ),
        Row(f"{closed_label}: p50", closed.p50_ms, "ms", "", "", None, ""),
        Row(
            f"{closed_label}: p99",
            closed.p99_ms,
            "ms",
            "< 1000 ms",
            "",
            None,
            met(closed.p99_ms, 1000, " ms"),
        ),
        _errors_row(f"{closed_label}: errors", closed.error_count, closed.sent),
    ]
    batch_anchor = f"RQ enqueue_many of 100: p50 {many.p50_ms:.2f} ms"
    for q in (50, 99):
        value = percentile(batch_ms, q) if batch_ms else math.nan
        rows.append(
            Row(
                f"batch of 100 accept p{q}",
                value,
                "ms",
                "< 100 ms" if q == 99 else "",
                batch_anchor,
                ratio(value, many.p50_ms) if batch_ms else None,
                (met(value, 100, " ms") if q == 99 else "") if batch_ms else "not measured",
            )
        )
    rows.append(_errors_row("batch of 100: errors", sum(batch_errors.values()), args.batches))
    return rows


def _errors_row(label: str, errors: int, sent: int) -> Row:
    return Row(label, errors, "errors", "0", f"of {sent} requests", None, met(errors, 0, ""))
