"""What filled sheets say: win rate with its interval, criteria, agreement; and the gate.

How it is counted (docs/training.md, "Human evaluation"):

- Each item gets one verdict from its raters' choices (mapped to the versions by the key):
  the outcome most raters chose, candidate, other or tie; a draw between outcomes is a tie.
  Items, not single judgments, are the trials: three raters of one prompt are not three
  independent samples of the model.
- The win rate is ``wins / (wins + losses)`` over the items with a decisive verdict; ties
  are reported and left out, the usual convention for paired preference tests (a tie says
  nothing about which is better). Its interval is Wilson's at 95% and the p-value a
  two-sided exact binomial test against 0.5 (scipy.stats.binomtest).
- Agreement is Krippendorff's alpha (the ``krippendorff`` package), nominal, on the
  raters' choices as outcomes (candidate / other / tie), unrated cells missing. It is
  undefined (None) when fewer than two raters rated any item in common or every rating is
  the same value.
- Criterion scores (1-5) are averaged per version across raters and items.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel

from recipes.evaluation.human.sheets import EvalKey, Outcome, Sheet, outcome, side_of
from recipes.schema import HumanEvalGate

CONFIDENCE = 0.95
# The value each outcome takes in Krippendorff's reliability matrix (nominal: codes only).
_CODES: dict[str, float] = {"candidate": 0.0, "other": 1.0, "tie": 2.0}


class CriterionScores(BaseModel):
    criterion: str
    candidate_mean: float | None
    other_mean: float | None
    candidate_ratings: int
    other_ratings: int


class HumanEvalResult(BaseModel):
    """A human evaluation of ``candidate`` against ``other`` (None: the base model)."""

    model: str
    candidate: int
    other: int | None
    export_id: str
    seed: int
    raters: list[str]
    items: int  # items rated by at least one rater
    judgments: int
    unrated: int
    wins: int
    losses: int
    ties: int
    win_rate: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float = CONFIDENCE
    p_value: float | None
    alpha: float | None
    choices: dict[str, int]  # judgments by outcome: candidate, other, tie
    criteria: list[CriterionScores]
    imported_at: datetime | None = None

    @property
    def other_label(self) -> str:
        return "base" if self.other is None else f"v{self.other}"

    def describe(self) -> str:
        rate = "-" if self.win_rate is None else f"{self.win_rate:.2f}"
        ci = "" if self.ci_low is None or self.ci_high is None else (
            f" ({self.confidence:.0%} CI {self.ci_low:.2f}-{self.ci_high:.2f})")
        alpha = "undefined" if self.alpha is None else f"{self.alpha:.2f}"
        return (f"v{self.candidate} vs {self.other_label}: win rate {rate}{ci}, "
                f"{self.wins}-{self.losses}-{self.ties} (win-loss-tie) over {self.items} "
                f"items, alpha {alpha}, {len(self.raters)} raters")


def item_verdict(outcomes: Sequence[Outcome]) -> Outcome:
    """The outcome most raters chose; a draw for the most is a tie."""
    counts = Counter(outcomes).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie"
    return counts[0][0]


def win_rate(wins: int, losses: int) -> tuple[float | None, float | None, float | None,
                                               float | None]:
    """``(rate, ci_low, ci_high, p_value)`` of ``wins`` out of the decided items."""
    n = wins + losses
    if n == 0:
        return None, None, None, None
    from scipy.stats import binomtest

    test = binomtest(wins, n, 0.5)
    ci = test.proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return wins / n, float(ci.low), float(ci.high), float(test.pvalue)


def reliability_matrix(key: EvalKey, sheets: Sequence[Sheet]) -> list[list[float]]:
    """Raters x items (the key's item order), outcome codes, NaN where unrated."""
    col = {it.id: i for i, it in enumerate(key.items)}
    matrix: list[list[float]] = []
    for sh in sheets:
        row = [math.nan] * len(key.items)
        for j in sh.judgments:
            row[col[j.item]] = _CODES[outcome(key, j)]
        matrix.append(row)
    return matrix


def krippendorff_alpha(matrix: Sequence[Sequence[float]]) -> float | None:
    """Nominal alpha of ``matrix``, or None where it is undefined (see the module docstring)."""
    import numpy as np

    data = np.asarray(matrix, dtype=float)
    pairable = (~np.isnan(data)).sum(axis=0) >= 2
    if data.shape[0] < 2 or not pairable.any():
        return None
    values = set(data[:, pairable][~np.isnan(data[:, pairable])].tolist())
    if len(values) < 2:
        return None
    import krippendorff

    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))


def _mean(values: Sequence[int]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(key: EvalKey, sheets: Sequence[Sheet]) -> HumanEvalResult:
    """The result of ``sheets`` (checked against ``key`` by the caller)."""
    per_item: dict[str, list[Outcome]] = {}
    scores: dict[tuple[str, str], list[int]] = {}
    choices: Counter[str] = Counter()
    for sh in sheets:
        for j in sh.judgments:
            o = outcome(key, j)
            per_item.setdefault(j.item, []).append(o)
            choices[o] += 1
            for (side, criterion), value in j.scores.items():
                scores.setdefault((side_of(key, j.rater, j.item, side), criterion),
                                  []).append(value)
    verdicts = Counter(item_verdict(v) for v in per_item.values())
    wins, losses, ties = verdicts["candidate"], verdicts["other"], verdicts["tie"]
    rate, low, high, p = win_rate(wins, losses)
    return HumanEvalResult(
        model=key.model, candidate=key.candidate, other=key.other, export_id=key.export_id,
        seed=key.seed, raters=[sh.rater for sh in sheets], items=len(per_item),
        judgments=sum(choices.values()), unrated=sum(sh.unrated for sh in sheets),
        wins=wins, losses=losses, ties=ties, win_rate=rate, ci_low=low, ci_high=high,
        p_value=p, alpha=krippendorff_alpha(reliability_matrix(key, sheets)),
        choices={o: choices[o] for o in ("candidate", "other", "tie")},
        criteria=[CriterionScores(
            criterion=c, candidate_mean=_mean(scores.get(("candidate", c), [])),
            other_mean=_mean(scores.get(("other", c), [])),
            candidate_ratings=len(scores.get(("candidate", c), [])),
            other_ratings=len(scores.get(("other", c), []))) for c in key.criteria],
    )


# ---- the promotion gate (pure) ----------------------------------------------------------------


def gate_problems(gate: HumanEvalGate, result: HumanEvalResult | None, ref: str) -> list[str]:
    """What keeps ``ref`` (``M@vN``) from production under ``gate``; empty when it passes."""
    if result is None:
        return [f"{ref} has no human evaluation yet (its recipe's deploy.human_eval requires "
                f"one: win rate >= {gate.min_win_rate}, alpha >= {gate.min_alpha})"]
    out: list[str] = []
    if result.win_rate is None:
        out.append(f"the human evaluation of {ref} decided no item (all ties or unrated), "
                   f"so its win rate is unknown (min_win_rate {gate.min_win_rate})")
    elif result.win_rate < gate.min_win_rate:
        out.append(f"the human evaluation of {ref} has win rate {result.win_rate:.2f} < "
                   f"min_win_rate {gate.min_win_rate} (against {result.other_label})")
    if result.alpha is None:
        out.append(f"the raters' agreement on {ref} is undefined (alpha needs two raters of "
                   f"the same items and more than one value; min_alpha {gate.min_alpha})")
    elif result.alpha < gate.min_alpha:
        out.append(f"the raters' agreement on {ref} is alpha {result.alpha:.2f} < min_alpha "
                   f"{gate.min_alpha}")
    return out
