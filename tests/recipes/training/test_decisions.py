"""Pure decisions of training and evaluation: no model, no I/O beyond tmp files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recipes.evaluation.gates import check_gates
from recipes.evaluation.metrics import contains, exact_match, rouge_l, score_generations
from recipes.schema import (
    AdapterMethod,
    BaseModelSpec,
    GatesSpec,
    TrainingSpec,
)
from recipes.training.lr import recommend_lr, resolve_lr
from recipes.training.model import TrainingConfigError, device_settings
from recipes.training.progress import early_stop_verdict, read_log, truncate_log


def _metrics(**over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "validation": {"loss": 1.0, "perplexity": 2.7, "base_loss": 2.0, "base_perplexity": 7.4},
        "test": {"loss": 1.2, "perplexity": 3.3, "base_loss": 2.0, "base_perplexity": 7.4},
        "generation": {"examples": 4, "exact_match": 0.25, "contains": 0.75, "rouge_l": 0.6},
        "general": {"perplexity": 11.0, "base_perplexity": 10.0, "regression": 0.1},
    }
    m.update(over)
    return m


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
        pytest.param({"max_eval_loss": 1.0}, False, 1.2, id="loss-high"),
        pytest.param({"max_general_regression": 0.05}, False, 0.1, id="forgot-too-much"),
        pytest.param({"max_general_regression": 0.2}, True, 0.1, id="forgetting-ok"),
    ],
)
def test_gates_compare_measured_values_with_thresholds(
    gates: dict[str, float], passed: bool, value: float
) -> None:
    [result] = check_gates(GatesSpec(**gates), _metrics())
    assert result.passed is passed
    assert result.value == pytest.approx(value)
    assert result.threshold == next(iter(gates.values()))


def test_a_gate_without_its_measurement_fails_with_a_reason() -> None:
    [result] = check_gates(GatesSpec(min_exact_match=0.1), _metrics(generation={"examples": 0}))
    assert result.passed is False
    assert result.value is None
    assert "not measured" in result.reason


def test_loss_gates_use_validation_when_there_is_no_test_split() -> None:
    metrics = _metrics()
    del metrics["test"]
    [result] = check_gates(GatesSpec(max_perplexity=3.0), metrics)
    assert result.value == pytest.approx(2.7)
    assert result.passed


def test_no_gates_means_no_results() -> None:
    assert check_gates(GatesSpec(), _metrics()) == []


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


def test_auto_learning_rate_scales_with_method_and_model_size() -> None:
    tiny = recommend_lr(AdapterMethod.lora, 590_464, 300)
    assert tiny.learning_rate == pytest.approx(1e-2)  # 2e-4 x the 50x cap
    seven_b = recommend_lr(AdapterMethod.lora, 7_000_000_000, 300)
    assert seven_b.learning_rate == pytest.approx(2e-4)
    full = recommend_lr(AdapterMethod.full, 7_000_000_000, 300)
    assert full.learning_rate == pytest.approx(2e-5)
    big_data = recommend_lr(AdapterMethod.lora, 7_000_000_000, 50_000)
    assert big_data.learning_rate == pytest.approx(1e-4)
    assert "anchor" in tiny.reason
    assert resolve_lr(3e-4, AdapterMethod.lora, 1, 1).learning_rate == 3e-4


@pytest.mark.parametrize(
    ("device", "bf16_ok", "params", "expected"),
    [
        pytest.param("cpu", False, 10**6, ("fp32", False, "float32"), id="cpu"),
        pytest.param("cuda", True, 10**6, ("bf16", False, "bfloat16"), id="cuda-small"),
        pytest.param("cuda", True, 7 * 10**9, ("bf16", True, "bfloat16"), id="cuda-7b"),
        pytest.param("cuda", False, 10**6, ("fp16", False, "float16"), id="cuda-no-bf16"),
    ],
)
def test_device_settings_resolve_auto(
    device: str, bf16_ok: bool, params: int, expected: tuple[str, bool, str]
) -> None:
    s = device_settings(TrainingSpec(), BaseModelSpec(path="m"), device,  # type: ignore[arg-type]
                        num_params=params, bf16_ok=bf16_ok)
    assert (s.precision, s.gradient_checkpointing, s.dtype) == expected


def test_fp16_on_cpu_is_refused_with_a_fix() -> None:
    with pytest.raises(TrainingConfigError, match="fp16 precision is not supported on CPU"):
        device_settings(TrainingSpec(precision="fp16"), BaseModelSpec(path="m"), "cpu",
                        num_params=1, bf16_ok=False)


@pytest.mark.parametrize(
    ("losses", "stop"),
    [
        pytest.param([3.0, 2.0, 1.0], False, id="improving"),
        pytest.param([1.0, 1.1, 1.2], True, id="two-worse"),
        pytest.param([1.0, 0.999, 0.998], True, id="below-threshold"),
        pytest.param([1.0, 1.1, 0.5], False, id="recovered"),
    ],
)
def test_early_stopping_verdict(losses: list[float], stop: bool) -> None:
    assert early_stop_verdict(losses, patience=2, threshold=0.01).stop is stop


def test_truncate_log_drops_steps_after_the_resumed_checkpoint(tmp_path: Path) -> None:
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1, "loss": 3}\n{"step": 5, "loss": 2}\n{"step": 9, "lo')
    truncate_log(log, 5)
    assert [r["step"] for r in read_log(log)] == [1, 5]
