"""rollout.canary.stats: the mixture SPRT keeps its level under continuous looking."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest

from rollout.canary.stats import rate_test, upper_bound


def _ever_rejected(p: float, p0: float, alpha: float, looks: int, runs: int, seed: int,
                   side: Literal["above", "below"] = "above") -> float:
    """Share of simulated runs whose test rejected at ANY of ``looks`` looks."""
    rng = np.random.default_rng(seed)
    outcomes = rng.random((runs, looks)) < p
    hits = 0
    for row in outcomes:
        k = np.cumsum(row)
        for n in range(5, looks + 1, 5):  # a look every 5 requests
            if rate_test(int(k[n - 1]), n, p0, alpha, side=side).rejected:
                hits += 1
                break
    return hits / runs


def test_the_false_alarm_rate_stays_below_alpha_however_often_it_is_looked_at() -> None:
    # A fixed-sample test looked at 100 times would fire far more often than alpha.
    assert _ever_rejected(p=0.05, p0=0.05, alpha=0.05, looks=1000, runs=1000, seed=1) <= 0.05


def test_a_rate_below_the_null_rarely_rejects_the_above_side() -> None:
    assert _ever_rejected(p=0.02, p0=0.05, alpha=0.05, looks=300, runs=100, seed=2) <= 0.01


def test_a_clear_excess_is_found_quickly() -> None:
    result = rate_test(successes=10, trials=50, p0=0.01, alpha=0.01 / 16)
    assert result.rejected and result.p_value < 0.01 / 16


def test_few_outcomes_are_not_evidence() -> None:
    result = rate_test(successes=1, trials=20, p0=0.01, alpha=0.01)
    assert not result.rejected
    assert result.p_value == pytest.approx(1.0)


@pytest.mark.parametrize(("successes", "trials"), [
    pytest.param(0, 2000, id="none-of-many"),
    pytest.param(5, 2000, id="few-of-many"),
])
def test_the_below_side_proves_a_low_rate(successes: int, trials: int) -> None:
    assert rate_test(successes, trials, 0.01, 0.01, side="below").rejected
    assert not rate_test(successes, 50, 0.01, 0.01, side="below").rejected


def test_upper_bound_covers_the_observed_rate_and_shrinks_with_data() -> None:
    wide, narrow = upper_bound(1, 100, 0.05), upper_bound(10, 1000, 0.05)
    assert 0.01 < narrow < wide < 1
    assert upper_bound(0, 0, 0.05) == 1.0


@pytest.mark.parametrize(("successes", "trials", "p0", "message"), [
    pytest.param(3, 2, 0.1, "not within", id="more-successes-than-trials"),
    pytest.param(0, 2, 0.0, "strictly between", id="p0-zero"),
])
def test_bad_arguments_raise(successes: int, trials: int, p0: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rate_test(successes, trials, p0, 0.05)
