"""Generation metrics: exact match, contains and ROUGE-L, pure functions over strings.

ROUGE-L comes from Google's ``rouge-score`` (the reference implementation
used by the summarisation literature) rather than a hand-written LCS.
"""

from __future__ import annotations

import math
import re
import statistics
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_SPACE = re.compile(r"\s+")
_PUNCT_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def normalize(text: str) -> str:
    """Lower case, NFKC, collapsed whitespace, no leading/trailing punctuation."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _SPACE.sub(" ", text).strip()
    return _PUNCT_EDGES.sub("", text)


def exact_match(prediction: str, reference: str) -> float:
    return 1.0 if normalize(prediction) == normalize(reference) else 0.0


def contains(prediction: str, reference: str) -> float:
    """1 when the normalised reference appears inside the normalised prediction."""
    ref = normalize(reference)
    return 1.0 if ref and ref in normalize(prediction) else 0.0


@lru_cache(maxsize=1)
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence of tokens)."""
    if not normalize(reference) and not normalize(prediction):
        return 1.0
    score = _scorer().score(reference, prediction)["rougeL"]
    return float(score.fmeasure)


@dataclass(frozen=True)
class GenerationScores:
    examples: int
    exact_match: float
    contains: float
    rouge_l: float


def score_generations(predictions: Sequence[str], references: Sequence[str]) -> GenerationScores:
    """Mean of each metric over aligned prediction/reference pairs."""
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions for {len(references)} references; they must align"
        )
    n = len(predictions)
    if n == 0:
        return GenerationScores(0, 0.0, 0.0, 0.0)
    pairs = list(zip(predictions, references, strict=True))
    return GenerationScores(
        examples=n,
        exact_match=sum(exact_match(p, r) for p, r in pairs) / n,
        contains=sum(contains(p, r) for p, r in pairs) / n,
        rouge_l=sum(rouge_l(p, r) for p, r in pairs) / n,
    )


def perplexity(mean_loss: float) -> float:
    """exp(loss), capped so that a diverged model reports a large finite number."""
    return math.exp(min(mean_loss, 50.0))


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    index = min(98, max(0, round(q * 100) - 1))
    return float(cuts[index])
