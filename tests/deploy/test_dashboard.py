"""The Grafana dashboard is generated from code (deploy/grafana/dashboard.py, with
grafana-foundation-sdk): the committed JSON equals what the code generates, it is a
well-formed dashboard, and every metric its queries and the alert rules name is one the
gateway exports (docs/metrics.md's catalogue). That each query returns data from a real
Prometheus scraping a real gateway is tests/serving/test_dashboard_live.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from deploy.grafana import dashboard
from deploy.metrics_reference import catalogue, exported_series
from tests.support.paths import REPO

METRIC = re.compile(r"\breg_[a-z0-9_]+")


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(dashboard.OUT.read_text())
    return data


def test_the_committed_json_is_what_the_code_generates() -> None:
    assert dashboard.OUT.read_text() == dashboard.render(), (
        "deploy/grafana/reg-dashboard.json is out of date: run `make dashboards`")


def test_the_check_mode_fails_on_drift(tmp_path: Path) -> None:
    out = tmp_path / "board.json"
    assert dashboard.main(["--out", str(out)]) == 0
    assert dashboard.main(["--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("Requests per second", "Requests per minute"))
    assert dashboard.main(["--out", str(out), "--check"]) == 1


def test_it_is_a_dashboard_grafana_can_import() -> None:
    data = committed()
    assert data["uid"] == dashboard.UID and data["title"]
    names = [v["name"] for v in data["templating"]["list"]]
    assert names == ["datasource", "model"]
    panels = [p for p in data["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)) and 0 not in ids
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)) and all(refs), p["title"]
        pos = p["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, p["title"]
    # No two panels overlap on the grid.
    cells: set[tuple[int, int]] = set()
    for p in data["panels"]:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine


@pytest.mark.parametrize("title", [
    "Requests per second", "Error rate (5xx)", "Latency p50 / p95 / p99",
    "Time to first token p50 / p95", "Output tokens per second", "Traffic weights",
    "Rollout phase", "Step and canary weight", "Last analysis", "Adapters loaded vs slots",
    "Engine up", "Engine restarts", "Reconcile events", "Reconcile failures", "Training runs",
    "Deployed versions servable",
])
def test_the_panels_operators_need_are_there(title: str) -> None:
    assert title in {t for t, _ in dashboard.targets(committed())}


def test_queries_follow_the_model_variable_where_a_metric_has_a_model() -> None:
    with_model = {s for d in catalogue() if "model" in d.labels for s in d.series}
    for title, expr in dashboard.targets(committed()):
        for metric in METRIC.findall(expr):
            if metric in with_model:
                assert re.search(metric + r'\{[^}]*model=~"\$model"', expr), f"{title}: {expr}"


def test_every_metric_the_dashboard_and_the_alerts_name_is_exported() -> None:
    exported = exported_series()
    used = {(title, m) for title, expr in dashboard.targets(committed())
            for m in METRIC.findall(expr)}
    alerts = (REPO / "deploy" / "prometheus" / "alerts.yml").read_text()
    used |= {("alerts.yml", m) for m in METRIC.findall(alerts)}
    # Prose names families with a wildcard (reg_rollout_*): those end in "_" here.
    unknown = sorted((where, m) for where, m in used if m not in exported
                     and not m.endswith("_"))
    assert unknown == []
