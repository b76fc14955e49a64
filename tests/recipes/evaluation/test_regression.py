"""Re-evaluation's verdict (recipes.evaluation.regression) and what it says it skipped
(recipes.evaluation.served): pure functions, no I/O."""

from __future__ import annotations

import pytest

from recipes.core.errors import RegError
from recipes.evaluation.regression import allowed_bound, compare, regressed
from recipes.evaluation.served import TokenRow, row_loss_terms, skipped_metrics

REGISTERED = {"test.loss": 2.0, "test.perplexity": 7.389, "generation.exact_match": 0.8,
              "generation.rouge_l": 0.9, "general.loss": 4.0}


@pytest.mark.parametrize(("metric", "measured", "flagged"), [
    pytest.param("test.loss", 2.1, False, id="loss-at-the-relative-bound"),
    pytest.param("test.loss", 2.11, True, id="loss-past-the-relative-bound"),
    pytest.param("test.loss", 0.5, False, id="loss-better"),
    pytest.param("generation.exact_match", 0.75, False, id="score-at-the-absolute-bound"),
    pytest.param("generation.exact_match", 0.74, True, id="score-past-the-absolute-bound"),
    pytest.param("generation.rouge_l", 1.0, False, id="score-better"),
])
def test_each_metric_is_held_to_its_direction_and_scale(metric: str, measured: float,
                                                        flagged: bool) -> None:
    (check,) = compare(REGISTERED, {metric: measured}, tolerance=0.05)
    assert check.regressed is flagged
    assert check.registered == REGISTERED[metric]
    assert (check.reason.startswith("REGRESSED") if flagged else check.reason.startswith("ok"))


def test_bounds_are_relative_for_losses_and_absolute_for_scores() -> None:
    assert allowed_bound("general.loss", 4.0, 0.1) == pytest.approx(4.4)
    assert allowed_bound("generation.contains", 0.5, 0.1) == pytest.approx(0.4)


def test_zero_tolerance_flags_any_worsening_and_keeps_the_order() -> None:
    checks = compare(REGISTERED, {"generation.exact_match": 0.8, "test.loss": 2.0000001,
                                  "validation.loss": 1.0}, tolerance=0.0)
    assert [c.metric for c in checks] == ["validation.loss", "test.loss",
                                          "generation.exact_match"]  # COMPARED's order
    assert regressed(checks) == ["test.loss"]
    unmatched = next(c for c in checks if c.metric == "validation.loss")
    assert not unmatched.regressed and unmatched.allowed is None
    assert "no registration value" in unmatched.reason


def test_bad_input_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"tolerance -0\.1 is negative"):
        compare(REGISTERED, {}, tolerance=-0.1)
    with pytest.raises(ValueError, match=r"preference\.chosen_preferred: not re-evaluated"):
        compare(REGISTERED, {"preference.chosen_preferred": 0.5})


def test_skipped_metrics_are_named_with_their_reason() -> None:
    registered = {**REGISTERED, "test.base_loss": 3.0, "test.examples": 5.0,
                  "generation.latency_s_mean": 0.1, "preference.reward_accuracy": 0.6,
                  "general.regression": 0.1, "train.steps": 40.0, "validation.loss": 1.0}
    measured = dict(REGISTERED)
    skipped = skipped_metrics(registered, measured)
    assert set(skipped) == {"test.base_loss", "generation.latency_s_mean",
                            "preference.reward_accuracy", "general.regression",
                            "validation.loss"}
    assert "base model" in skipped["test.base_loss"]
    assert "not rebuilt" in skipped["validation.loss"]
    # Without --losses, each loss is skipped with why it was not asked for.
    without = skipped_metrics(registered, {"generation.exact_match": 0.8}, losses=False)
    assert "--losses" in without["test.loss"] and "--losses" in without["general.loss"]
    assert "generation.exact_match" not in without


def test_a_rows_loss_counts_only_its_labelled_tokens_after_the_first() -> None:
    row = TokenRow(ids=[5, 6, 7, 8], labels=[-100, -100, 7, 8])
    total, count = row_loss_terms(row, [None, -9.0, -0.5, -1.5, -3.0])  # + a generated token
    assert (total, count) == (2.0, 2)
    with pytest.raises(RegError, match="no log-probability for prompt token 2"):
        row_loss_terms(row, [None, -1.0, None, -1.0])
