"""Gates and generation metrics: pure verdicts over a typed evaluation report."""

from __future__ import annotations

from typing import Any

import pytest

from recipes.evaluation.gates import check_gates
from recipes.evaluation.metrics import contains, exact_match, rouge_l, score_generations
from recipes.evaluation.report import EvaluationReport
from recipes.schema import GatesSpec


def _report(**over: Any) -> EvaluationReport:
    m: dict[str, Any] = {
        "validation": {"loss": 1.0, "perplexity": 2.7, "base_loss": 2.0, "base_perplexity": 7.4},
        "test": {"loss": 1.2, "perplexity": 3.3, "base_loss": 2.0, "base_perplexity": 7.4},
        "generation": {"examples": 4, "exact_match": 0.25, "contains": 0.75, "rouge_l": 0.6},
        "general": {"perplexity": 11.0, "base_perplexity": 10.0, "regression": 0.1},
    }
    m.update(over)
    return EvaluationReport.parse({k: v for k, v in m.items() if v is not None})


@pytest.mark.parametrize(
    ("gates", "passed", "value"),
    [
        pytest.param({"max_perplexity": 4.0}, True, 3.3, id="ppl-under-ceiling"),
        pytest.param({"max_perplexity": 3.0}, False, 3.3, id="ppl-over-ceiling"),
        pytest.param({"min_improvement_vs_base": 0.5}, True, (7.4 - 3.3) / 7.4, id="improved"),
        pytest.param({"min_improvement_vs_base": 0.6}, False, (7.4 - 3.3) / 7.4,
                     id="not-improved-enough"),
        pytest.param({"min_exact_match": 0.5}, False, 0.25, id="exact-match-low"),
        pytest.param({"min_contains": 0.5}, True, 0.75, id="contains-ok"),
        pytest.param({"min_rouge_l": 0.5}, True, 0.6, id="rouge-ok"),
        pytest.param({"max_eval_loss": 1.0}, False, 1.2, id="loss-high"),
        pytest.param({"max_general_regression": 0.05}, False, 0.1, id="forgot-too-much"),
        pytest.param({"max_general_regression": 0.2}, True, 0.1, id="forgetting-ok"),
    ],
)
def test_gates_compare_measured_values_with_thresholds(
    gates: dict[str, float], passed: bool, value: float
) -> None:
    [result] = check_gates(GatesSpec(**gates), _report())
    assert result.passed is passed
    assert result.value == pytest.approx(value)
    assert result.threshold == next(iter(gates.values()))


def test_every_gate_of_the_schema_has_a_reading() -> None:
    every = {name: 0.5 for name in GatesSpec.model_fields}
    results = check_gates(GatesSpec(**every), _report())
    assert [r.gate for r in results] == list(GatesSpec.model_fields)


def test_a_gate_without_its_measurement_fails_with_a_reason() -> None:
    [result] = check_gates(GatesSpec(min_exact_match=0.1), _report(generation={"examples": 0}))
    assert result.passed is False
    assert result.value is None
    assert "not measured" in result.reason


def test_loss_gates_use_validation_when_there_is_no_test_split() -> None:
    [result] = check_gates(GatesSpec(max_perplexity=3.0), _report(test=None))
    assert result.value == pytest.approx(2.7)
    assert result.passed


def test_no_gates_means_no_results() -> None:
    assert check_gates(GatesSpec(), _report()) == []


@pytest.mark.parametrize(
    ("pred", "ref", "em", "cont"),
    [
        pytest.param("Alpha: reset password.", "alpha: reset password", 1.0, 1.0, id="normalised"),
        pytest.param("alpha: reset password now", "alpha: reset password", 0.0, 1.0, id="contains"),
        pytest.param("bravo", "alpha", 0.0, 0.0, id="different"),
    ],
)
def test_generation_metrics(pred: str, ref: str, em: float, cont: float) -> None:
    assert exact_match(pred, ref) == em
    assert contains(pred, ref) == cont


def test_rouge_l_is_the_lcs_f_measure() -> None:
    # LCS of "a b c d" and "a c d e" is "a c d": P = R = 3/4.
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    scores = score_generations(["alpha one", "bravo"], ["alpha one", "alpha"])
    assert scores.examples == 2
    assert scores.exact_match == 0.5


def test_score_generations_refuses_misaligned_lists() -> None:
    with pytest.raises(ValueError, match="must align"):
        score_generations(["a"], [])
