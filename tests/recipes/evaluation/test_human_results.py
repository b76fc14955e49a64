"""The human evaluation's statistics and its promotion gate (pure, table tests).

Win rates and intervals are checked against scipy, alpha against ``krippendorff`` called
here on the matrix the test writes down itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import krippendorff
import numpy as np
import pytest
from scipy.stats import binomtest

from recipes.evaluation.human.results import (
    HumanEvalResult,
    gate_problems,
    item_verdict,
    krippendorff_alpha,
    summarize,
    win_rate,
)
from recipes.evaluation.human.sheets import Item, Judgment, Sheet, Side, build_sheets
from recipes.schema import HumanEvalGate

GATE = HumanEvalGate(min_win_rate=0.55, min_alpha=0.6)
REF = "bot@v3"


def _result(win: float | None, alpha: float | None) -> HumanEvalResult:
    return HumanEvalResult(
        model="bot", candidate=3, other=2, export_id="x", seed=0, raters=["rater-1"],
        items=10, judgments=30, unrated=0, wins=6, losses=4, ties=0, win_rate=win,
        ci_low=None, ci_high=None, p_value=None, alpha=alpha, choices={}, criteria=[])


@pytest.mark.parametrize(("result", "expected"), [
    pytest.param(None, ["bot@v3 has no human evaluation yet"], id="none-yet"),
    pytest.param(_result(0.8, 0.9), [], id="passes"),
    pytest.param(_result(0.55, 0.6), [], id="at-the-thresholds"),
    pytest.param(_result(0.5, 0.9), ["win rate 0.50 < min_win_rate 0.55 (against v2)"],
                 id="win-rate-low"),
    pytest.param(_result(0.8, 0.41), ["alpha 0.41 < min_alpha 0.6"], id="alpha-low"),
    pytest.param(_result(0.3, 0.2), ["win rate 0.30 < min_win_rate", "alpha 0.20 < min_alpha"],
                 id="both-low"),
    pytest.param(_result(None, 0.9), ["decided no item"], id="all-ties"),
    pytest.param(_result(0.9, None), ["agreement on bot@v3 is undefined"], id="alpha-undefined"),
])
def test_gate_problems(result: HumanEvalResult | None, expected: list[str]) -> None:
    problems = gate_problems(GATE, result, REF)
    assert len(problems) == len(expected), problems
    for problem, part in zip(problems, expected, strict=True):
        assert part in problem


@pytest.mark.parametrize(("outcomes", "verdict"), [
    pytest.param(["candidate", "candidate", "other"], "candidate", id="majority"),
    pytest.param(["other", "other", "tie"], "other", id="majority-other"),
    pytest.param(["tie", "tie", "candidate"], "tie", id="majority-tie"),
    pytest.param(["candidate", "other", "tie"], "tie", id="three-way-draw"),
    pytest.param(["candidate", "other"], "tie", id="two-way-draw"),
    pytest.param(["candidate"], "candidate", id="one-rater"),
])
def test_item_verdict(outcomes: list[str], verdict: str) -> None:
    assert item_verdict(outcomes) == verdict  # type: ignore[arg-type]


@pytest.mark.parametrize(("wins", "losses"), [(4, 1), (0, 5), (30, 20), (1, 0)])
def test_win_rate_matches_scipy(wins: int, losses: int) -> None:
    rate, low, high, p = win_rate(wins, losses)
    test = binomtest(wins, wins + losses, 0.5)
    ci = test.proportion_ci(confidence_level=0.95, method="wilson")
    assert rate == wins / (wins + losses)
    assert low == pytest.approx(ci.low) and high == pytest.approx(ci.high)
    assert p == pytest.approx(test.pvalue)


def test_win_rate_of_no_decided_item_is_unknown() -> None:
    assert win_rate(0, 0) == (None, None, None, None)


@pytest.mark.parametrize("matrix", [
    pytest.param([[0, 0, 1, 2, 0], [0, 0, 1, 2, 1], [0, 1, 1, 2, 0]], id="three-raters"),
    pytest.param([[0, 1, 0, 1], [1, 0, 1, 0]], id="opposed"),
    pytest.param([[0, math.nan, 1, 2], [0, 1, math.nan, 2], [math.nan, 1, 1, 0]],
                 id="missing-cells"),
])
def test_alpha_matches_krippendorff(matrix: list[list[float]]) -> None:
    expected = krippendorff.alpha(reliability_data=np.array(matrix, dtype=float),
                                  level_of_measurement="nominal")
    assert krippendorff_alpha(matrix) == pytest.approx(expected)


@pytest.mark.parametrize("matrix", [
    pytest.param([[0, 1, 2]], id="one-rater"),
    pytest.param([[0, 0, 0], [0, 0, 0]], id="one-value"),
    pytest.param([[0, math.nan], [math.nan, 1]], id="no-item-rated-twice"),
])
def test_alpha_is_undefined(matrix: list[list[float]]) -> None:
    assert krippendorff_alpha(matrix) is None


def test_summarize_maps_sides_back_to_versions() -> None:
    items = [Item(f"i{n}", f"prompt {n}", f"mine {n}", f"theirs {n}") for n in range(4)]
    key, sheets = build_sheets(items, model="bot", candidate=3, other=None, raters=2, seed=5,
                               criteria=["accuracy"])
    # Both raters prefer the candidate on i0-i2 and the other on i3, scoring the candidate 4.
    meant = {"i0": "c", "i1": "c", "i2": "c", "i3": "o"}
    filled = []
    for rater, rows in sheets.items():
        judgments = []
        for row in rows:
            cand = key.raters[rater].candidate_side[row.item]
            other: Side = "B" if cand == "A" else "A"
            judgments.append(Judgment(rater, row.item, cand if meant[row.item] == "c" else other,
                                      {(cand, "accuracy"): 4, (other, "accuracy"): 2}))
        filled.append(Sheet(Path("x.csv"), rater, key.export_id, judgments, 0))
    r = summarize(key, filled)
    assert (r.wins, r.losses, r.ties, r.items, r.judgments) == (3, 1, 0, 4, 8)
    assert r.win_rate == 0.75 and r.other is None and r.other_label == "base"
    assert r.alpha == pytest.approx(1.0)
    assert r.choices == {"candidate": 6, "other": 2, "tie": 0}
    assert (r.criteria[0].candidate_mean, r.criteria[0].other_mean) == (4.0, 2.0)
