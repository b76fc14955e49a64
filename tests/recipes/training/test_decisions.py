"""Pure decisions of training: no model, no I/O beyond tmp files."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.schema import (
    AdapterMethod,
    BaseModelSpec,
    TrainingSpec,
)
from recipes.training.lr import recommend_lr, resolve_lr, usual_lr_range
from recipes.training.model import TrainingConfigError, device_settings
from recipes.training.progress import early_stop_verdict, read_log, truncate_log


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


@pytest.mark.parametrize("params", [590_464, 10**8, 7 * 10**9, 7 * 10**10])
@pytest.mark.parametrize("examples", [300, 50_000])
@pytest.mark.parametrize("method", list(AdapterMethod))
def test_the_auto_rate_lies_in_the_usual_range_reg_doctor_holds_rates_to(
        method: AdapterMethod, params: int, examples: int) -> None:
    low, high = usual_lr_range(method, params)
    assert low <= recommend_lr(method, params, examples).learning_rate <= high


def test_the_usual_range_grows_for_small_models_like_the_auto_rate() -> None:
    assert usual_lr_range(AdapterMethod.lora, None) == (1e-5, 1e-3)  # 7B-class
    assert usual_lr_range(AdapterMethod.lora, 7 * 10**10) == (1e-5, 1e-3)  # never below
    low, high = usual_lr_range(AdapterMethod.lora, 590_464)
    assert low == pytest.approx(5e-4) and high == pytest.approx(5e-2)  # the 50x cap


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
