"""Real training on the tiny Llama for objectives reward and grpo: a reward model ranks
chosen above rejected on held-out pairs better than its untrained head; GRPO raises the
mean reward it logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.artifact import verify_manifest
from recipes.training.entry import train
from recipes.training.progress import read_log
from tests.support.factories import LoadedRecipeFactory

pytestmark = pytest.mark.slow

SEED = 7


def test_a_reward_model_ranks_chosen_above_rejected_better_than_its_untrained_head(
    make_recipe: LoadedRecipeFactory, tmp_path: Path
) -> None:
    loaded = make_recipe("polite-dpo", name="polite-judge", **{
        "spec.training.objective": "reward", "spec.training.dpo": None,
        "spec.training.max_steps": 20, "spec.training.learning_rate": 0.003,
        "spec.training.seed": SEED, "spec.deploy.target": "none",
        "spec.data.split.test": 0.25,
        "spec.evaluation.gates.min_pairwise_accuracy": 0.5})
    print(f"seed {SEED}")
    result = train(loaded, tmp_path / "w", progress=False)
    pref = result.report.preference
    assert pref is not None and pref.examples >= 8
    print(f"pairwise accuracy: untrained head {pref.base_chosen_preferred}, "
          f"trained {pref.chosen_preferred} on {pref.examples} test pairs")
    assert pref.chosen_preferred is not None and pref.base_chosen_preferred is not None
    assert pref.chosen_preferred > pref.base_chosen_preferred
    assert pref.chosen_preferred > 0.5
    [gate] = result.gates
    assert gate.gate == "min_pairwise_accuracy" and gate.passed
    # The adapter and its score head, in safetensors; no probes (a reward model is not served).
    manifest = verify_manifest(result.artifact_dir)
    files = {f["path"] for f in manifest["files"]}
    assert "adapter_model.safetensors" in files and "probes.json" not in files
    assert manifest["identity"]["objective"] == "reward"
    from safetensors import safe_open

    with safe_open(str(result.artifact_dir / "adapter_model.safetensors"), "pt") as f:
        assert any("score" in k for k in f.keys())  # noqa: SIM118 (safe_open has no __iter__)


def test_grpo_raises_the_mean_reward_it_logs(make_recipe: LoadedRecipeFactory,
                                             tmp_path: Path) -> None:
    # Reward: short answers (at most 8 characters). The tiny model's sampled answers run to
    # the completion limit, so a shorter one is easy to find in a group and to learn.
    loaded = make_recipe("support-bot", name="short-bot", **{
        "spec.training.objective": "grpo", "spec.training.max_steps": 16,
        "spec.training.learning_rate": 0.02, "spec.training.batch_size": 8,
        "spec.training.lr_scheduler": "constant",
        # The tiny model is randomly initialised: its output layer's small weights make every
        # distribution near uniform, and only training that layer (fully) moves it quickly.
        "spec.adapter.modules_to_save": ["lm_head"],
        "spec.deploy.target": "none",
        "spec.training.seed": SEED, "spec.training.eval_every_steps": None,
        "spec.training.early_stopping": None,
        "spec.training.grpo": {"rewards": [{"length": {"max": 8}, "weight": 1.0}],
                               "num_generations": 4, "max_completion_length": 12},
        "spec.evaluation.general": None, "spec.evaluation.generation_examples": 0,
        "spec.evaluation.gates": None})
    print(f"seed {SEED}")
    result = train(loaded, tmp_path / "w", progress=False)
    rewards = [float(r["reward"]) for r in read_log(result.artifact_dir / "train_log.jsonl")
               if "reward" in r]
    print(f"logged mean rewards: {rewards}")
    assert len(rewards) >= 8
    first, last = rewards[:4], rewards[-4:]
    assert sum(last) / 4 > sum(first) / 4
