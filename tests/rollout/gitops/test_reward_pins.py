"""A GRPO recipe's reward model is pinned by the plan: a reference the registry cannot
resolve blocks the recipe with a located problem; once the reward model is registered and in
its stage, the policy trains against that version's artifact, which its manifest records;
the pinned version and digest are part of the spec hash. Real training on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipes.identity import SpecIdentity, with_reward_models
from registry.api import Registry
from rollout.gitops.reconciler import Reconciler
from tests.support.factories import WorkspaceFactory


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: pinning reads versions and stages through the registry's API, which the
    registry's own tests run on both databases; training twice more on PostgreSQL adds time."""
    return f"sqlite:///{tmp_path / 'registry.db'}"


JUDGE = "polite-dpo"  # the example's preference recipe, turned into a reward model


def judge(text: str) -> str:
    """polite-dpo as a reward model: few steps, not served, promoted to production."""
    return (text.replace("objective: dpo", "objective: reward")
            .replace("max_steps: 40", "max_steps: 4")
            .replace("    generation_examples: 4\n", "")
            .replace("  deploy:\n    target: vllm\n",
                     "  deploy:\n    target: none\n    promote_to: production\n"))


def policy(text: str) -> str:
    """support-bot as a GRPO policy scored by the judge in production and a length rule."""
    return (text.replace(
        "    objective: sft                    # loss on the assistant's tokens only\n",
        "    objective: grpo\n"
        "    grpo:\n"
        "      rewards:\n"
        f"        - model: {JUDGE}:production\n"
        "        - length: {max: 8}\n"
        "      num_generations: 4\n"
        "      max_completion_length: 8\n")
        .replace("max_steps: 250", "max_steps: 2")
        .replace("generation_examples: 8", "generation_examples: 0")
        .replace("    general:                          # general text, to see how much the "
                 "tuning forgets\n      path: ../data/general.jsonl\n      format: text\n"
                 "      max_examples: 32\n", ""))


@pytest.mark.slow
def test_the_plan_pins_the_reward_model_and_the_policy_trains_against_it(
    workspace: WorkspaceFactory, registry: Registry,
) -> None:
    ws = workspace(keep=(JUDGE, "support-bot"), edit={JUDGE: judge, "support-bot": policy})
    recipe = ws / "recipes" / "support-bot.yaml"
    rec = Reconciler(registry, [ws / "recipes"])

    # Planned before the judge is registered: the policy is blocked at its reference.
    _, state = rec.plan()
    [blocked] = [b for b in state.blocked if b.name == "support-bot"]
    [problem] = blocked.problems
    assert problem.field == "spec.training.grpo.rewards.0.model"
    assert f"no model named {JUDGE!r}" in problem.message
    lines = recipe.read_text().splitlines()
    assert problem.line is not None and f"model: {JUDGE}:production" in lines[problem.line - 1]

    rec.run_once()  # trains the judge and promotes it; the policy stays blocked
    [v1] = registry.list_versions(JUDGE)
    assert v1.objective == "reward" and "production" in registry.stage_map(JUDGE)
    pref = v1.metrics.get("preference", {})
    assert pref.get("examples", 0) > 0 and "chosen_preferred" in pref

    rec.run_once()  # the policy, pinned to v1
    [policy_v1] = registry.list_versions("support-bot")
    manifest = json.loads((Path(registry.store.materialize(
        str(policy_v1.artifact_digest), ws / "fetched")) / "manifest.json").read_text())
    assert manifest["identity"]["reward_models"] == [{
        "ref": f"{JUDGE}:production", "model": JUDGE, "version": 1,
        "artifact_digest": v1.artifact_digest}]
    assert manifest["identity"]["spec_hash"] == policy_v1.spec_hash

    # The stage no longer points at a version: the plan says so, training never guesses.
    registry.clear_stage(JUDGE, "production", actor="test")
    _, state = rec.plan()
    [blocked] = [b for b in state.blocked if b.name == "support-bot"]
    assert "points at no version" in blocked.problems[0].message


def test_the_pinned_version_and_digest_are_part_of_the_spec_hash() -> None:
    ident = SpecIdentity("sha256:" + "0" * 64, {}, {}, {})
    pin = {"ref": "judge:production", "model": "judge", "version": 1,
           "artifact_digest": "sha256:" + "a" * 64}
    one = with_reward_models(ident, [pin])
    two = with_reward_models(ident, [{**pin, "version": 2}])
    other_bytes = with_reward_models(ident, [{**pin, "artifact_digest": "sha256:" + "b" * 64}])
    assert with_reward_models(ident, []) is ident
    assert len({ident.spec_hash, one.spec_hash, two.spec_hash, other_bytes.spec_hash}) == 4
    assert with_reward_models(ident, [pin]).spec_hash == one.spec_hash
    assert one.as_json()["reward_models"] == [pin]
