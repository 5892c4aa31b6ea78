"""The table bench/fleet.py prints: each figure with its target, its anchor and their ratio."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from e2e import percentile


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


def table_rows(
    slot_counts: list[int],
    thr: dict[int, float],
    pss: dict[int, float],
    bare_pss: list[float],
    blank_tab: float,
    cold: dict[str, list[float]],
    bare_ready: list[float],
    overhead: list[float],
    anchor_overhead: list[float],
    busy: int,
) -> list[Row]:
    """One row per figure: value, target, the anchor from the same run, ratio, met or not."""
    rows: list[Row] = []
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
    for label, samples in cold.items():
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
                f"overhead p{q}, {busy} busy",
                ours,
                "ms",
                "ratio <= 1.30",
                f"bare PW {busy} pages: {base:.1f} ms",
                ratio(ours, base),
                overhead_miss(ratio(ours, base)),
            )
        )
    return rows
