"""EWC and replay reduce forgetting, measured on real runs of the tiny Llama.

The tiny model is randomly initialised, so there is nothing to forget until it has learned
something: the module first teaches it general text (continued pre-training, full
fine-tuning, on sentences of the tiny corpus), and that model is the base of the narrow
runs. Each narrow run then fine-tunes it on the support chats (every answer "alpha: ..."),
with the same seed, data, rate and steps: without a control, with ``training.ewc``, and with
``data.replay``. ``evaluation.general`` (the example's general.jsonl: other sentences of the
same corpus than the pre-training, replay and EWC reference data) is the general set whose
loss reg's evaluation reports before (the base) and after (the tuned model).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from recipes.evaluation.report import GeneralMetrics, SplitMetrics
from recipes.scaffold.tiny_model import sample_sentences
from recipes.training.entry import TrainResult, train
from tests.support.factories import LoadedRecipeFactory
from tests.support.figures import record

pytestmark = pytest.mark.slow

SUITE = "training controls"
SEED = 42
NARROW_STEPS = 30
EWC_WEIGHT = 1000.0
REPLAY_RATIO = 0.3
# Each control must remove at least this share of the uncontrolled run's rise.
MIN_REDUCTION = 0.25
LOSS = "nats/token"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def narrow_runs(module_workspace: Path, make_module_recipe: LoadedRecipeFactory,
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainResult]:
    ws = module_workspace
    root = tmp_path_factory.mktemp("forgetting")
    data = ws / "data"
    _write_jsonl(data / "pretrain.jsonl", [{"text": s} for s in sample_sentences(100, 400)])
    general = sample_sentences(200, 200)  # replay and EWC reference: the same sentences
    _write_jsonl(data / "reference.jsonl", [{"text": s} for s in general])
    _write_jsonl(data / "replay.jsonl", [
        {"messages": [{"role": "user", "content": "Say something."},
                      {"role": "assistant", "content": s}]} for s in general])
    pretrain = make_module_recipe("support-bot", name="general-base", **{
        "spec.data.format": "text", "spec.data.sources": [{"path": "../data/pretrain.jsonl"}],
        "spec.data.system_prompt": None, "spec.training.objective": "cpt",
        "spec.adapter.method": "full", "spec.deploy.target": "none",
        "spec.training.max_steps": 100, "spec.training.learning_rate": 3e-3,
        "spec.training.max_seq_length": 64, "spec.training.seed": SEED,
        "spec.evaluation.general": None, "spec.evaluation.generation_examples": 0,
    })
    base = train(pretrain, root / "general-base", progress=False)
    shutil.copytree(base.artifact_dir, ws / "models" / "general-llama")

    narrow = {
        "spec.base_model.path": "../models/general-llama", "spec.adapter.method": "full",
        "spec.training.learning_rate": 3e-3, "spec.training.max_steps": NARROW_STEPS,
        "spec.training.seed": SEED, "spec.deploy.target": "none",
        "spec.evaluation.generation_examples": 0,
    }
    controls: dict[str, dict[str, Any]] = {
        "none": {},
        "ewc": {"spec.training.ewc": {"weight": EWC_WEIGHT,
                                      "reference": "../data/reference.jsonl"}},
        "replay": {"spec.data.replay": {"path": "../data/replay.jsonl",
                                        "ratio": REPLAY_RATIO}},
    }
    return {name: train(make_module_recipe("support-bot", name=f"narrow-{name}",
                                           **{**narrow, **extra}),
                        root / name, progress=False)
            for name, extra in controls.items()}


def _general(result: TrainResult) -> GeneralMetrics:
    general = result.report.general
    assert general is not None and general.loss is not None and general.base_loss is not None
    return general


def _rise(result: TrainResult) -> float:
    g = _general(result)
    assert g.loss is not None and g.base_loss is not None
    return g.loss - g.base_loss


def _test(result: TrainResult) -> SplitMetrics:
    test = result.report.test
    assert test is not None and test.loss is not None and test.base_loss is not None
    return test


def test_narrow_fine_tuning_raises_the_general_loss(narrow_runs: dict[str, TrainResult]) -> None:
    none = narrow_runs["none"]
    base = _general(none).base_loss
    print(f"general-set loss: base {base:.4f}, "
          + ", ".join(f"{name} {_general(r).loss:.4f}" for name, r in narrow_runs.items()))
    # Without this there is nothing for EWC or replay to reduce.
    assert _rise(none) > 0.5
    test = _test(none)
    assert test.loss is not None and test.base_loss is not None
    assert test.loss < test.base_loss  # the narrow task is learned
    # The same base, measured on the same general set, in every run.
    assert {_general(r).base_loss for r in narrow_runs.values()} == {base}
    record(SUITE, "forgetting: general-set loss of the base", float(base or 0.0), LOSS)
    record(SUITE, "forgetting: general-set loss after, no control",
           float(_general(none).loss or 0.0), LOSS)


@pytest.mark.parametrize(("control", "measure"), [
    pytest.param("ewc", f"EWC (weight {EWC_WEIGHT:g})", id="ewc"),
    pytest.param("replay", f"replay (ratio {REPLAY_RATIO:g})", id="replay"),
])
def test_the_control_reduces_the_general_loss_rise(
    narrow_runs: dict[str, TrainResult], control: str, measure: str,
) -> None:
    without, with_control = _rise(narrow_runs["none"]), _rise(narrow_runs[control])
    print(f"general-set loss rise: without {without:.4f}, with {control} {with_control:.4f}")
    assert with_control <= (1 - MIN_REDUCTION) * without
    # Still trained on the narrow task: its test loss is below the base's.
    test = _test(narrow_runs[control])
    assert test.loss is not None and test.base_loss is not None
    assert test.loss < test.base_loss
    record(SUITE, f"forgetting: general-set loss after, {measure}",
           float(_general(narrow_runs[control]).loss or 0.0), LOSS)
