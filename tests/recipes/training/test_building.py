"""Builders on the real tiny model: PEFT configs for every method, QLoRA gradients,
pickle-free optimizer state, estimates and advice."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from recipes.planning.advise import (
    Approach,
    DataSignals,
    format_regularity,
    git_change_rate,
    recommend,
)
from recipes.planning.estimate import compare, read_shape, trainable_params
from recipes.schema import AdapterMethod, AdapterSpec, BaseModelSpec, Quantization, TrainingSpec
from recipes.training.checkpoint import load_state, save_state
from recipes.training.model import (
    attach_adapter,
    config_param_count,
    count_parameters,
    device_settings,
    load_base_model,
)

TINY_PARAMS = 590_464


def _adapter(method: AdapterMethod) -> AdapterSpec:
    extra: dict[str, object] = {}
    if method in (AdapterMethod.prefix_tuning, AdapterMethod.prompt_tuning):
        extra["num_virtual_tokens"] = 4
    return AdapterSpec(method=method, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "method",
    [pytest.param(m, id=m.value) for m in AdapterMethod if m is not AdapterMethod.qlora],
)
def test_every_method_trains_only_what_the_estimate_predicts(
    tiny_model_dir: Path, method: AdapterMethod
) -> None:
    base_spec = BaseModelSpec(path="m")
    settings = device_settings(TrainingSpec(), base_spec, "cpu", num_params=1, bf16_ok=False)
    model = load_base_model(base_spec, tiny_model_dir, settings)
    adapter = _adapter(method)
    model = attach_adapter(model, adapter, tiny_model_dir, settings, quantized=False)
    trainable, total = count_parameters(model)
    shape = read_shape(tiny_model_dir, trust_remote_code=False)
    assert trainable == trainable_params(adapter, shape)
    assert total >= TINY_PARAMS


def test_qlora_lora_gradients_are_non_zero(tiny_model_dir: Path) -> None:
    base_spec = BaseModelSpec(path="m", quantization=Quantization(bits=4))
    settings = device_settings(TrainingSpec(), base_spec, "cpu", num_params=1, bf16_ok=False)
    model = load_base_model(base_spec, tiny_model_dir, settings)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    model = attach_adapter(model, _adapter(AdapterMethod.qlora), tiny_model_dir, settings,
                           quantized=True)
    trainable, total = count_parameters(model)
    assert trainable == 8192 and total >= TINY_PARAMS
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(10, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        opt.step()
    # After one step lora_B is non-zero, so lora_A receives gradient too.
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads.values()), [
        n for n, g in grads.items() if g is None or float(g.abs().sum()) == 0]


def test_optimizer_state_round_trips_without_pickle(tmp_path: Path) -> None:
    layer = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, betas=(0.8, 0.9))
    layer(torch.ones(2, 4)).sum().backward()
    opt.step()
    save_state(opt.state_dict(), tmp_path, "optimizer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimizer.json",
                                                           "optimizer.safetensors"]
    fresh = torch.optim.AdamW(layer.parameters(), lr=0.5)
    fresh.load_state_dict(load_state(tmp_path, "optimizer"))
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"][0]["betas"] == tuple(b["param_groups"][0]["betas"])
    assert b["param_groups"][0]["lr"] == 0.1
    for k in a["state"]:
        assert torch.equal(a["state"][k]["exp_avg"], b["state"][k]["exp_avg"])


def test_param_count_is_read_from_the_config(tiny_model_dir: Path) -> None:
    assert config_param_count(BaseModelSpec(path="m"), tiny_model_dir) == TINY_PARAMS


def test_memory_ranks_full_above_lora_above_qlora_and_gpus_fit(tiny_model_dir: Path) -> None:
    shape = read_shape(tiny_model_dir, trust_remote_code=False)
    memory, gpus = compare(AdapterSpec(), TrainingSpec(), shape, 10_000, checkpointing=False)
    by = {m.method: m for m in memory}
    assert by["full"].total > by["lora"].total > by["qlora"].total
    assert by["full"].trainable_params == TINY_PARAMS
    assert by["lora"].trainable_params == 2 * 2 * 8 * (128 + 128)  # 2 layers x q,v x r(in+out)
    h100 = next(g for g in gpus if g.gpu.name == "H100 80GB")
    assert h100.hours == pytest.approx(6 * TINY_PARAMS * 10_000 / (989e12 * 0.35) / 3600)
    assert all(h100.fits.values())


@pytest.mark.parametrize(
    ("signals", "approach"),
    [
        pytest.param(DataSignals(20, 1.0, "json", 0.0), Approach.prompting, id="few-examples"),
        pytest.param(DataSignals(500, 0.9, "json", 8.0), Approach.hybrid, id="regular-churn"),
        pytest.param(DataSignals(500, 0.2, "x", 8.0), Approach.rag, id="irregular-churn"),
        pytest.param(DataSignals(500, 0.9, "json", 0.3), Approach.fine_tuning, id="stable"),
        pytest.param(DataSignals(100, 0.9, "json", None), Approach.fine_tuning, id="no-git"),
    ],
)
def test_advice_follows_the_signals(signals: DataSignals, approach: Approach) -> None:
    advice = recommend(signals)
    assert advice.approach is approach
    assert any(str(signals.examples) in r for r in advice.reasons)


def test_format_regularity_finds_the_dominant_shape() -> None:
    share, shape = format_regularity(['{"a": 1}', '{"b": 2}', "alpha: x", '{"c": 3}'])
    assert (share, shape) == (0.75, "json")


def test_git_change_rate_counts_commits_touching_the_data(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    env = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for i in range(3):
        data.write_text(f"{i}\n")
        subprocess.run(["git", *env, "-C", str(tmp_path), "add", "d.jsonl"], check=True)
        subprocess.run(["git", *env, "-C", str(tmp_path), "commit", "-qm", f"c{i}"], check=True)
    rate, commits = git_change_rate([data])
    assert commits == 3
    assert rate == pytest.approx(1.0)
    assert git_change_rate([Path("/") / "nonexistent-dir" / "x"]) == (None, None)


def test_bad_data_fails_before_anything_is_written(workspace: Path, tmp_path: Path) -> None:
    from recipes.core.errors import DataError
    from recipes.loading.loader import load_recipe
    from recipes.training.entry import train

    (workspace / "data" / "support.jsonl").write_text('{"messages": "not a list"}\n')
    loaded = load_recipe(workspace / "recipes" / "support-bot.yaml")
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"support\.jsonl"):
        train(loaded, out, progress=False)
    assert not out.exists()
