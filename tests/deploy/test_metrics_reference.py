"""docs/metrics.md is generated from the gateway's metrics registry and the operator
collector (deploy/metrics_reference.py): it lists every metric with its type, labels and
help, and fails here when the code changes without it."""

from __future__ import annotations

from pathlib import Path

from deploy import metrics_reference as ref
from serving.gateway.metrics import Metrics


def test_docs_metrics_md_is_what_the_code_generates() -> None:
    assert ref.OUT.read_text() == ref.render(), (
        "docs/metrics.md is out of date: run `make dashboards`")


def test_the_check_mode_fails_on_drift(tmp_path: Path) -> None:
    out = tmp_path / "metrics.md"
    assert ref.main(["--out", str(out)]) == 0
    assert ref.main(["--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("reg_engine_up", "reg_engine_ok"))
    assert ref.main(["--out", str(out), "--check"]) == 1


def test_it_lists_every_metric_the_gateway_registers_with_its_labels() -> None:
    docs = {d.name: d for d in ref.catalogue()}
    registered = {f.name for f in Metrics().registry.collect()}
    exported = {n.removesuffix("_total") for n in docs}
    assert registered <= exported, registered - exported
    assert docs["reg_gateway_requests_total"].labels == ("model", "version", "stage", "code")
    assert docs["reg_gateway_requests_total"].type == "counter"
    assert docs["reg_gateway_request_duration_seconds"].series == (
        "reg_gateway_request_duration_seconds_bucket", "reg_gateway_request_duration_seconds_sum",
        "reg_gateway_request_duration_seconds_count")
    assert docs["reg_engine_adapter_slots"].labels == ("engine",)
    assert docs["reg_rollout_phase"].labels == ("model", "version", "phase")
    assert docs["reg_reconcile_events_total"].source == "registry"
    text = ref.OUT.read_text()
    for name in docs:
        assert f"| `{name}` |" in text
