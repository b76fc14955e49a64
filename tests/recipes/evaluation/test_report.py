"""The evaluation report: metrics.json written and read in one place, old files included."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from recipes.evaluation.report import (
    EvaluationReport,
    GateResult,
    HeldOutLoss,
    MetricRow,
    ReportError,
    SplitMetrics,
    TrainSummary,
    held_out_loss,
)


def _report() -> EvaluationReport:
    report = EvaluationReport(
        validation=SplitMetrics(examples=4, tokens=40, loss=1.5, base_loss=2.5, perplexity=4.48,
                                base_perplexity=12.2),
        test=SplitMetrics(examples=5, tokens=50, loss=1.25, base_loss=2.75, perplexity=3.49,
                          base_perplexity=15.6),
        gates=[GateResult(gate="max_perplexity", value=3.49, threshold=10.0, passed=True,
                          reason="ok")],
        gates_passed=True,
    )
    report.train = TrainSummary(steps=8, first_loss=2.0, last_loss=1.0)
    report.device = {"device": "cpu"}
    return report


def test_a_written_report_reads_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    _report().write(path)
    again = EvaluationReport.read(path)
    assert again == _report()
    assert again.to_json() == _report().to_json()
    text = path.read_text()
    assert text.endswith("\n") and json.loads(text)["train"]["steps"] == 8
    assert list(json.loads(text)) == sorted(json.loads(text))  # keys sorted for people


def test_absent_sections_are_not_written() -> None:
    data = EvaluationReport(gates_passed=False).to_json()
    assert data == {"gates_passed": False}


def test_an_old_hand_made_file_reads_with_its_unknown_keys_kept() -> None:
    old = {"eval_loss": 1.75, "perplexity": 5.8, "base": {"eval_loss": 2.5},
           "gates_passed": True,
           "gates": {"max_eval_loss": {"value": 1.75, "threshold": 3.0, "passed": True}}}
    report = EvaluationReport.parse(old)
    assert report.held_out_loss() == HeldOutLoss("", 1.75, None)
    assert report.gates == [GateResult(gate="max_eval_loss", value=1.75, threshold=3.0,
                                       passed=True)]
    assert report.to_json()["base"] == {"eval_loss": 2.5}
    assert report.numeric()["base.eval_loss"] == 2.5


def test_unknown_keys_inside_a_section_are_kept() -> None:
    report = EvaluationReport.parse({"test": {"loss": 1.0, "bleu": 0.3}, "gates_passed": None})
    assert report.to_json() == {"test": {"loss": 1.0, "bleu": 0.3}, "gates_passed": None}


def test_nan_and_infinities_are_written_as_null(tmp_path: Path) -> None:
    report = EvaluationReport.parse({"test": {"loss": math.nan, "perplexity": math.inf},
                                     "diverged": {"x": -math.inf}})
    assert report.to_json() == {"test": {"loss": None, "perplexity": None},
                                "diverged": {"x": None}}
    path = tmp_path / "metrics.json"
    report.write(path)
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()


def test_a_value_of_the_wrong_type_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"test": {"loss": "low"}}))
    with pytest.raises(ReportError, match=r"metrics\.json: test\.loss: Input should be a valid"):
        EvaluationReport.read(path)
    path.write_text("{not json")
    with pytest.raises(ReportError, match=r"metrics\.json: not valid JSON"):
        EvaluationReport.read(path)
    with pytest.raises(ReportError, match="expected a JSON object, got list"):
        EvaluationReport.parse([1, 2])


def test_the_primary_split_is_test_then_validation() -> None:
    assert _report().held_out_loss() == HeldOutLoss("test", 1.25, 2.75)
    no_test = EvaluationReport.parse({"validation": {"loss": 1.5, "base_loss": 2.5},
                                      "test": {"loss": None}})
    assert no_test.primary_split() == "validation"
    assert no_test.held_out_loss() == HeldOutLoss("validation", 1.5, 2.5)
    assert EvaluationReport().held_out_loss() is None


def test_the_stored_json_is_read_as_the_model_reads_it() -> None:
    """`reg versions` reads the loss from what the registry stored, without the model."""
    assert held_out_loss(_report().to_json()) == HeldOutLoss("test", 1.25, 2.75)
    assert held_out_loss({"eval_loss": 2}) == HeldOutLoss("", 2.0, None)
    assert held_out_loss({"test": {"loss": True}, "eval_loss": False}) is None


def test_comparison_puts_the_base_beside_the_tuned_value() -> None:
    rows = {r.metric: r for r in _report().comparison()}
    assert rows["validation.loss"] == MetricRow("validation.loss", 1.5, 2.5)
    assert rows["test.examples"] == MetricRow("test.examples", 5.0, None)
    assert "validation.base_loss" not in rows
    assert not any(k.startswith("gates") for k in rows)  # gates are a table of their own


def test_gate_results_are_none_only_when_the_file_had_no_gates() -> None:
    assert EvaluationReport.parse({"gates_passed": True}).gate_results() is None
    assert EvaluationReport.parse({"gates": []}).gate_results() == []
    assert _report().gate_results() == [{"gate": "max_perplexity", "value": 3.49,
                                         "threshold": 10.0, "passed": True, "reason": "ok"}]
