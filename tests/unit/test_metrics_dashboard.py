"""The Grafana dashboard in docker/grafana/ is built on the names our code exports: every
expression's metric exists, and the dashboard covers each family the issue asks for."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import Counter, Histogram

from controller.metrics import fleet_families
from semantest import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docker" / "grafana" / "semantest-dashboard.json"
#: PromQL functions and keywords that look like names.
_PROMQL = {"sum", "by", "rate", "increase", "histogram_quantile", "le", "without"}


def exported() -> set[str]:
    """Every sample name a Semantest process can expose."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names.add(f"{value._name}_total")
        elif isinstance(value, Histogram):
            names |= {f"{value._name}_{s}" for s in ("bucket", "count", "sum")}
    families = fleet_families([], {("sandbox", "normal"): 0})
    assert {f.name for f in families} == set(metrics.FLEET_GAUGES)
    return names | set(metrics.FLEET_GAUGES)


def expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_every_expression_uses_only_exported_metrics() -> None:
    known = exported()
    exprs = expressions()
    assert len(exprs) >= 15
    for expr in exprs:
        used = set(re.findall(r"\bsemantest_[a-z0-9_]+", expr))
        assert used, f"no semantest metric in {expr!r}"
        unknown = used - known
        assert not unknown, f"{expr!r} uses {unknown}, which no process exports"


def test_the_dashboard_covers_every_family() -> None:
    used = {m for e in expressions() for m in re.findall(r"\bsemantest_[a-z0-9_]+", e)}
    families = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    for needed in (
        "semantest_queue_depth",
        "semantest_jobs_finished",
        "semantest_job_queue_wait_seconds",
        "semantest_job_run_seconds",
        "semantest_job_total_seconds",
        "semantest_slots",
        "semantest_slot_utilisation",
        "semantest_agent_starts",
        "semantest_agent_cold_start_seconds",
        "semantest_agent_restarts",
        "semantest_webhook_deliveries",
        "semantest_addon_requests",
        "semantest_rate_limit_rejections",
        "semantest_http_request_duration_seconds",
    ):
        assert needed in families, f"the dashboard shows nothing of {needed}"


def test_labels_are_bounded() -> None:
    """No metric takes a label that could carry a job id, a prompt or a raw path."""
    unbounded = {"job_id", "jobId", "prompt", "path", "url", "request_id", "key"}
    for value in vars(metrics).values():
        if isinstance(value, Counter | Histogram):
            assert not unbounded & set(value._labelnames), value._name
