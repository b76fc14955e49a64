"""Re-evaluation's verdict: does a version serve worse now than it measured at registration?

Pure: ``compare(registered, measured, tolerance)`` holds each metric a re-evaluation
measures (:data:`COMPARED`) against the same key of the version's registration report
(:meth:`recipes.evaluation.report.EvaluationReport.numeric`) and returns one
:class:`MetricCheck` per metric, regressed or not, with the bound it was held to.

The tolerance is read the way each metric's scale asks:

- scores in [0, 1] (exact match, contains, ROUGE-L) may fall by at most ``tolerance``
  (absolute: 0.05 allows 0.80 -> 0.75);
- losses and perplexities may rise by at most ``tolerance`` of their registered value
  (relative: 0.05 allows a loss of 2.0 -> 2.1), since their scale depends on the data.

A metric that got better never regresses. A metric measured without a registration
value to hold it against is shown, unflagged, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel

DEFAULT_TOLERANCE = 0.05

# metric -> (lower is better, tolerance relative to the registered value)
COMPARED: dict[str, tuple[bool, bool]] = {
    "validation.loss": (True, True),
    "validation.perplexity": (True, True),
    "test.loss": (True, True),
    "test.perplexity": (True, True),
    "generation.exact_match": (False, False),
    "generation.contains": (False, False),
    "generation.rouge_l": (False, False),
    "general.loss": (True, True),
    "general.perplexity": (True, True),
}


class MetricCheck(BaseModel):
    """One metric of a re-evaluation against the version's registration value."""

    metric: str
    registered: float | None
    measured: float
    allowed: float | None  # the worst value within the tolerance; None: nothing to hold to
    regressed: bool
    reason: str


def allowed_bound(metric: str, registered: float, tolerance: float) -> float:
    """The worst value of ``metric`` within ``tolerance`` of ``registered``."""
    lower_is_better, relative = COMPARED[metric]
    slack = tolerance * abs(registered) if relative else tolerance
    return registered + slack if lower_is_better else registered - slack


def check_metric(metric: str, registered: float | None, measured: float,
                 tolerance: float) -> MetricCheck:
    """The verdict on one metric (one of :data:`COMPARED`)."""
    if metric not in COMPARED:
        raise ValueError(f"{metric!r} is not a re-evaluated metric; known: "
                         f"{', '.join(COMPARED)}")
    if registered is None:
        return MetricCheck(metric=metric, registered=None, measured=measured, allowed=None,
                           regressed=False, reason="no registration value to compare with")
    lower_is_better, relative = COMPARED[metric]
    bound = allowed_bound(metric, registered, tolerance)
    regressed = measured > bound if lower_is_better else measured < bound
    how = (f"{'+' if lower_is_better else '-'}{tolerance:g}"
           + (" relative" if relative else " absolute"))
    op = "<=" if lower_is_better else ">="
    verdict = "REGRESSED" if regressed else "ok"
    reason = (f"{verdict}: {measured:.4g} {'not ' if regressed else ''}{op} {bound:.4g} "
              f"(registered {registered:.4g}, {how})")
    return MetricCheck(metric=metric, registered=registered, measured=measured,
                       allowed=bound, regressed=regressed, reason=reason)


def compare(registered: Mapping[str, float], measured: Mapping[str, float],
            tolerance: float = DEFAULT_TOLERANCE) -> list[MetricCheck]:
    """One check per measured metric, in :data:`COMPARED`'s order."""
    if tolerance < 0:
        raise ValueError(f"tolerance {tolerance:g} is negative; use 0 or more (e.g. 0.05)")
    unknown = sorted(set(measured) - set(COMPARED))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not re-evaluated metrics; known: "
                         f"{', '.join(COMPARED)}")
    return [check_metric(m, registered.get(m), measured[m], tolerance)
            for m in COMPARED if m in measured]


def regressed(checks: list[MetricCheck]) -> list[str]:
    """The metrics that regressed."""
    return [c.metric for c in checks if c.regressed]
