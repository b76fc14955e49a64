"""Always-valid sequential tests on Bernoulli outcomes: look every second, stop when clear.

A canary check asks "is this rate above ``p0``?" (an error rate above the ceiling, the
canary's share of all errors above its share of requests, the share of slow requests
above 5%) while requests keep arriving. A fixed-sample test looked at after every
request would raise its false-alarm rate with the number of looks; a *mixture
sequential probability ratio test* does not.

The statistic is the likelihood ratio of the data under a mixture of alternatives (a
Beta prior on the rate, truncated to the alternative's side of ``p0``) against the
null at its boundary ``p0``. Under the null it is a non-negative supermartingale
starting at 1, so by Ville's inequality the chance that it *ever* reaches ``1/alpha``
is at most ``alpha``, however often it is looked at. ``1/ratio`` is therefore a
p-value valid at any stopping time.

The distributions come from scipy (``betaln`` and the Beta distribution's log
survival function); only the ratio is written here, since no package offers the
mixture SPRT for a one-sided Bernoulli rate.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Literal

# A flat prior over the alternative's side: no tuning to an expected effect size, and
# the ratio still grows fast for the gross failures a rollback must catch.
PRIOR_A = 1.0
PRIOR_B = 1.0


@dataclass(frozen=True)
class SequentialResult:
    """One look at one test."""

    successes: int  # outcomes that count towards the alternative (errors, slow requests)
    trials: int
    p0: float
    log_ratio: float  # log of the mixture likelihood ratio; 0 with no data
    alpha: float

    @property
    def rejected(self) -> bool:
        """True once the evidence against the null is clear at level ``alpha``."""
        return self.log_ratio >= math.log(1.0 / self.alpha)

    @property
    def p_value(self) -> float:
        """An always-valid p-value for this look: ``min(1, 1/ratio)``."""
        return 1.0 if self.log_ratio <= 0 else math.exp(-self.log_ratio)


def load_distributions() -> None:
    """Import scipy now rather than inside the first verdict: a long-running controller
    calls this as it starts (the import takes seconds on a busy machine)."""
    for name in ("scipy.special", "scipy.stats"):
        importlib.import_module(name)


def _log_mass(a: float, b: float, p0: float, side: Literal["above", "below"]) -> float:
    """log of the integral of x^(a-1)(1-x)^(b-1) over (p0, 1) or (0, p0)."""
    # Imported on first use: scipy is slow to import, and the commands that
    # start or steer a rollout (`reg rollout pause`, the reconciler) compute no statistic.
    from scipy import special, stats

    mass = float(special.betaincc(a, b, p0) if side == "above" else special.betainc(a, b, p0))
    if mass > 1e-280:
        tail = math.log(mass)
    else:  # deep in the tail: the distribution's log survival function does not underflow
        tail = float(stats.beta.logsf(p0, a, b) if side == "above"
                     else stats.beta.logcdf(p0, a, b))
    return float(special.betaln(a, b)) + tail


def rate_test(successes: int, trials: int, p0: float, alpha: float,
              side: Literal["above", "below"] = "above") -> SequentialResult:
    """Mixture SPRT of "the rate is above ``p0``" (``side="above"``) or below it.

    ``side="above"`` rejects the null "rate <= p0" once the data show the rate is
    above ``p0``; ``side="below"`` rejects "rate >= p0" once they show it is below.
    The likelihood ratio against the boundary ``p0`` also bounds every null rate
    further from the alternative, so the test is valid for the composite null.
    """
    if not 0 <= successes <= trials:
        raise ValueError(f"successes {successes} not within 0..{trials}")
    if not 0 < p0 < 1:
        raise ValueError(f"p0 must lie strictly between 0 and 1, got {p0}")
    if trials == 0:
        return SequentialResult(successes, trials, p0, 0.0, alpha)
    k, n = successes, trials
    mixture = _log_mass(k + PRIOR_A, n - k + PRIOR_B, p0, side) - _log_mass(
        PRIOR_A, PRIOR_B, p0, side)
    null = k * math.log(p0) + (n - k) * math.log1p(-p0)
    return SequentialResult(k, n, p0, mixture - null, alpha)


def upper_bound(successes: int, trials: int, alpha: float) -> float:
    """An always-valid upper confidence bound on the rate: the largest ``p0`` not rejected
    as too high by :func:`rate_test` ``side="below"`` (bisection; the test is monotone)."""
    if trials == 0:
        return 1.0
    lo, hi = successes / trials, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if mid <= 0.0:
            lo = mid
        elif rate_test(successes, trials, min(mid, 1 - 1e-12), alpha, side="below").rejected:
            hi = mid  # a rate as high as ``mid`` is ruled out
        else:
            lo = mid
    return hi

