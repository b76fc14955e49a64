"""Builders for human evaluation tests: a recipe text that requires one, and results."""

from __future__ import annotations

from recipes.evaluation.human.results import HumanEvalResult
from recipes.scaffold.example import SUPPORT_RECIPE

GATED_RECIPE = SUPPORT_RECIPE.replace(
    "  deploy:\n", "  deploy:\n    human_eval: {min_win_rate: 0.55, min_alpha: 0.6}\n", 1)
assert GATED_RECIPE != SUPPORT_RECIPE


def human_result(model: str, candidate: int, *, win_rate: float | None, alpha: float | None,
                 other: int | None = None) -> HumanEvalResult:
    """A stored result's shape; its figures are the test's (the statistics are tested in
    tests/recipes/evaluation)."""
    return HumanEvalResult(
        model=model, candidate=candidate, other=other, export_id="abc123", seed=0,
        raters=["rater-1", "rater-2", "rater-3"], items=10, judgments=30, unrated=0, wins=6,
        losses=4, ties=0, win_rate=win_rate, ci_low=None, ci_high=None, p_value=None,
        alpha=alpha, choices={"candidate": 18, "other": 12, "tie": 0}, criteria=[])
