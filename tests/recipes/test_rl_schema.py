"""Objectives reward and grpo in the recipe: each bad setting is one problem naming its file,
line and field with the fix; the rule rewards score completions as documented."""

from __future__ import annotations

import re
from typing import Any

import pytest

from recipes.loading.loader import check_recipes
from recipes.schema.training import (
    REWARD_MODEL_REF,
    ContainsReward,
    LengthBounds,
    LengthReward,
    RegexReward,
)
from recipes.training.rewards import (
    completion_text,
    length_score,
    rule_reward_func,
    rule_score,
)
from tests.support.factories import RecipeFactory
from tests.support.problems import line_of, only

REWARD = {"spec.training.objective": "reward", "spec.training.dpo": None,
          "spec.deploy.target": "none"}
GRPO = {"spec.training.objective": "grpo",
        "spec.training.grpo": {"rewards": [{"contains": "alpha"}], "num_generations": 4}}


def _clean(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in changes.items() if v is not None}


def test_a_reward_recipe_and_a_grpo_recipe_validate(write_recipe: RecipeFactory) -> None:
    reward = write_recipe("judge", base="polite-dpo", **_clean(REWARD))
    grpo = write_recipe("policy", **GRPO)
    result = check_recipes([reward, grpo])
    assert result.all_problems == []
    assert {r.recipe.spec.training.objective.value for r in result.recipes} == {"reward", "grpo"}


@pytest.mark.parametrize(("changes", "field", "needle", "message"), [
    pytest.param({**GRPO, "spec.training.grpo": {"rewards": [{"regex": "(unclosed"}]}},
                 "spec.training.grpo.rewards.0.regex", "(unclosed", "does not compile",
                 id="regex-does-not-compile"),
    pytest.param({**GRPO, "spec.training.grpo": {"rewards": [{"model": "Judge@latest"}]}},
                 "spec.training.grpo.rewards.0.model", "Judge@latest", "NAME@vN",
                 id="model-ref-malformed"),
    pytest.param({**GRPO, "spec.training.grpo": {"rewards": [{"similar": "x"}]}},
                 "spec.training.grpo.rewards.0", "similar", "model, contains, regex or length",
                 id="reward-of-no-kind"),
    pytest.param({**GRPO, "spec.training.grpo": {"num_generations": 4}},
                 "spec.training.grpo.rewards", "grpo:", "at least one reward",
                 id="grpo-without-rewards"),
    pytest.param({**GRPO, "spec.training.batch_size": 6}, "spec.training.grpo.num_generations",
                 "num_generations", "multiple of num_generations", id="group-does-not-divide"),
], )
def test_a_bad_grpo_setting_is_one_located_problem(
    write_recipe: RecipeFactory, changes: dict[str, Any], field: str, needle: str,
    message: str,
) -> None:
    path = write_recipe("policy", **changes)
    p = only(check_recipes([path]).all_problems)
    assert p.field == field, p.render()
    assert message in p.message, p.render()
    assert p.line == line_of(path, needle), p.render()


def test_a_reward_model_must_not_be_deployed_to_vllm(write_recipe: RecipeFactory) -> None:
    path = write_recipe("judge", base="polite-dpo",
                        **_clean({**REWARD, "spec.deploy.target": "vllm"}))
    p = only(check_recipes([path]).all_problems)
    assert p.field == "spec.deploy.target"
    assert "set deploy.target: none" in p.message
    assert p.line == line_of(path, "target: vllm")


def test_a_reward_model_refuses_language_model_gates(write_recipe: RecipeFactory) -> None:
    path = write_recipe("judge", base="polite-dpo",
                        **_clean({**REWARD, "spec.evaluation.gates.max_perplexity": 9.0}))
    p = only(check_recipes([path]).all_problems)
    assert p.field == "spec.evaluation.gates.max_perplexity"
    assert "min_pairwise_accuracy" in p.message


def test_pairwise_accuracy_gate_needs_preference_pairs(write_recipe: RecipeFactory) -> None:
    path = write_recipe("sft", **{"spec.evaluation.gates.min_pairwise_accuracy": 0.6})
    p = only(check_recipes([path]).all_problems)
    assert p.field == "spec.evaluation.gates.min_pairwise_accuracy"
    assert "objective reward or dpo" in p.message


def test_grpo_settings_on_another_objective_are_refused(write_recipe: RecipeFactory) -> None:
    path = write_recipe("sft", **{"spec.training.grpo": {"rewards": [{"contains": "a"}]}})
    p = only(check_recipes([path]).all_problems)
    assert p.field == "spec.training.grpo" and "objective grpo only" in p.message


@pytest.mark.parametrize(("ref", "ok"), [
    pytest.param("tone-judge@v2", True, id="version"),
    pytest.param("tone-judge:production", True, id="stage"),
    pytest.param("tone-judge", False, id="bare-name"),
    pytest.param("tone-judge@v0", False, id="version-zero"),
    pytest.param("tone-judge@2", False, id="no-v"),
    pytest.param("Tone@v1", False, id="upper-case"),
])
def test_reward_model_references(ref: str, ok: bool) -> None:
    assert (REWARD_MODEL_REF.match(ref) is not None) is ok


@pytest.mark.parametrize(("text", "low", "high", "score"), [
    pytest.param("abcd", 2, 8, 1.0, id="inside"),
    pytest.param("a" * 16, None, 8, 0.5, id="twice-the-max"),
    pytest.param("a", 4, None, 0.25, id="quarter-of-the-min"),
    pytest.param("", 4, None, 0.0, id="empty-against-a-min"),
    pytest.param("a" * 100, None, None, 1.0, id="no-bounds"),
])
def test_length_score(text: str, low: int | None, high: int | None, score: float) -> None:
    assert length_score(text, low, high) == pytest.approx(score)


def test_rule_rewards_score_completions_in_trls_shape() -> None:
    chats = [[{"role": "assistant", "content": "alpha: done"}],
             [{"role": "assistant", "content": "no"}]]
    assert completion_text(chats[0]) == "alpha: done" and completion_text("plain") == "plain"
    contains = rule_reward_func(ContainsReward(contains="alpha"), 0)
    regex = rule_reward_func(RegexReward(regex=r"^\w+:"), 1)
    length = rule_reward_func(LengthReward(length=LengthBounds(max=4)), 2)
    assert contains(prompts=[[], []], completions=chats) == [1.0, 0.0]
    assert regex(prompts=[[], []], completions=chats) == [1.0, 0.0]
    assert length(prompts=[[], []], completions=chats) == pytest.approx([4 / 11, 1.0])
    assert [f.__name__ for f in (contains, regex, length)] == [
        "contains_0", "regex_1", "length_2"]
    assert rule_score(RegexReward(regex="x{2}"), "axxb") == 1.0
    with pytest.raises(ValueError, match=re.escape("does not compile")):
        RegexReward(regex="[")
