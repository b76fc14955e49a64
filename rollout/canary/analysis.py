"""Canary analysis: one window of candidate and baseline measurements in, verdicts out. Pure.

Each check compares the candidate ("canary" side) with the version production serves
("baseline" side) over the same window and yields Successful, Failed or Inconclusive,
with the measured value, the limit, the sample sizes and the sequential statistic:

- ``error_rate``: Failed when the canary's error rate is clearly above
  ``max_error_rate`` (absolute ceiling), or when its share of all errors is clearly
  above its share of requests (significantly worse than the baseline); Successful when
  its rate is clearly below the ceiling.
- ``latency_p95`` and ``ttft_p95``: the threshold is ``max_latency_ratio`` times the
  baseline's p95; a canary as good as the baseline has at most 5% of its requests above
  it. Failed when clearly more than 5% are; Successful when clearly fewer.

"Clearly" is the always-valid mixture SPRT of :mod:`rollout.canary.stats`, so the
controller may look after every request. Fewer than ``min_requests`` on either side is
Inconclusive whatever the data say: single early errors must not roll back a version.
The step's verdict (:func:`step_verdict`) combines the checks with the step's deadline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np

from recipes.schema import RolloutSpec
from rollout.canary.stats import SequentialResult, rate_test

TAIL = 0.05  # p95: the share of requests a distribution leaves above its own p95
FAILURE_TESTS_PER_STEP = 4  # error ceiling, error vs baseline, latency, ttft


class Distribution(Protocol):
    """Latencies of one side in a window: raw samples, or a Prometheus histogram."""

    @property
    def count(self) -> int: ...

    def quantile(self, q: float) -> float: ...

    def count_above(self, threshold: float) -> int: ...


@dataclass(frozen=True)
class Samples:
    """Per-request values (seconds), as the gateway records them."""

    values: tuple[float, ...] = ()

    @property
    def count(self) -> int:
        return len(self.values)

    def quantile(self, q: float) -> float:
        return float(np.quantile(np.asarray(self.values), q)) if self.values else math.nan

    def count_above(self, threshold: float) -> int:
        return int(np.count_nonzero(np.asarray(self.values) > threshold))


@dataclass(frozen=True)
class Histogram:
    """A cumulative histogram (Prometheus ``le`` buckets, the last one ``+Inf``).

    Quantiles and counts above a threshold interpolate linearly inside a bucket, as
    PromQL's ``histogram_quantile`` does, so both sources read the same shape.
    """

    bounds: tuple[float, ...]  # upper bounds, increasing, ending with math.inf
    cumulative: tuple[float, ...]  # observations <= each bound

    @property
    def count(self) -> int:
        return int(self.cumulative[-1]) if self.cumulative else 0

    def quantile(self, q: float) -> float:
        total = self.count
        if total == 0:
            return math.nan
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound, cum in zip(self.bounds, self.cumulative, strict=True):
            if cum >= rank:
                if math.isinf(bound):
                    return lower_bound  # as histogram_quantile: the highest finite bound
                span = cum - lower_count
                frac = 0.0 if span <= 0 else (rank - lower_count) / span
                return lower_bound + (bound - lower_bound) * frac
            lower_bound, lower_count = bound, cum
        return lower_bound

    def count_above(self, threshold: float) -> int:
        lower_bound, lower_count = 0.0, 0.0
        for bound, cum in zip(self.bounds, self.cumulative, strict=True):
            if threshold < bound:
                if math.isinf(bound):
                    below = lower_count
                else:
                    frac = (threshold - lower_bound) / (bound - lower_bound)
                    below = lower_count + (cum - lower_count) * max(0.0, frac)
                return round(self.count - below)
            lower_bound, lower_count = bound, cum
        return 0


@dataclass(frozen=True)
class Side:
    """What one version did in the window."""

    requests: int = 0
    errors: int = 0  # 5xx, engine errors, and (canary side) requests that failed over
    latency: Distribution = field(default_factory=Samples)
    ttft: Distribution = field(default_factory=Samples)  # streaming requests only


@dataclass(frozen=True)
class Window:
    canary: Side
    baseline: Side
    seconds: float  # how long the window has been open


class Verdict(StrEnum):
    successful = "Successful"
    failed = "Failed"
    inconclusive = "Inconclusive"


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict, with what it measured and the statistic behind it."""

    name: str
    verdict: Verdict
    value: float | None  # the canary's error rate, or the canary/baseline p95 ratio
    limit: float
    canary_n: int
    baseline_n: int
    p_value: float  # always-valid p-value of the failure test
    detail: str

    def describe(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        return (f"{self.name} {self.verdict.value}: {value} (limit {self.limit:g}; "
                f"n={self.canary_n}/{self.baseline_n}; p={self.p_value:.3g}; {self.detail})")


def alpha_per_test(spec: RolloutSpec) -> float:
    """Each failure test's level: the rollout's ``alpha`` shared over every test it runs."""
    return spec.alpha / (FAILURE_TESTS_PER_STEP * len(spec.steps))


def _error_check(w: Window, spec: RolloutSpec, alpha: float) -> CheckResult:
    c, b = w.canary, w.baseline
    rate = c.errors / c.requests if c.requests else None

    def result(verdict: Verdict, p_value: float, detail: str) -> CheckResult:
        return CheckResult("error_rate", verdict, rate, spec.max_error_rate, c.requests,
                           b.requests, p_value, detail)

    if c.requests < spec.min_requests or b.requests < spec.min_requests:
        return result(Verdict.inconclusive, 1.0,
                      f"waiting for {spec.min_requests} requests per side")
    assert rate is not None
    if spec.max_error_rate <= 0:
        ceiling: SequentialResult | None = None
        over = c.errors > 0
    else:
        ceiling = rate_test(c.errors, c.requests, spec.max_error_rate, alpha)
        over = ceiling.rejected
    share = c.requests / (c.requests + b.requests)
    relative = rate_test(c.errors, c.errors + b.errors, share, alpha)
    p_value = min(relative.p_value, 1.0 if ceiling is None else ceiling.p_value)
    base_rate = b.errors / b.requests
    if over or relative.rejected:
        why = "above the ceiling" if over else "worse than the baseline"
        return result(Verdict.failed, p_value, f"{why} (baseline {base_rate:.4g})")
    if spec.max_error_rate > 0 and rate_test(c.errors, c.requests, spec.max_error_rate,
                                             alpha, side="below").rejected:
        return result(Verdict.successful, p_value, f"below the ceiling (baseline {base_rate:.4g})")
    return result(Verdict.inconclusive, p_value, f"not clear yet (baseline {base_rate:.4g})")


def _latency_check(name: str, canary: Distribution, baseline: Distribution,
                   spec: RolloutSpec, alpha: float) -> CheckResult | None:
    if canary.count == 0 and baseline.count == 0:
        return None  # nothing of this kind in the window (e.g. no streaming requests)

    def result(verdict: Verdict, value: float | None, p_value: float,
               detail: str) -> CheckResult:
        return CheckResult(name, verdict, value, spec.max_latency_ratio, canary.count,
                           baseline.count, p_value, detail)

    if canary.count < spec.min_requests or baseline.count < spec.min_requests:
        return result(Verdict.inconclusive, None, 1.0,
                      f"waiting for {spec.min_requests} samples per side")
    b95 = baseline.quantile(1 - TAIL)
    ratio = canary.quantile(1 - TAIL) / b95 if b95 > 0 else math.inf
    threshold = spec.max_latency_ratio * b95
    slow = canary.count_above(threshold)
    over = rate_test(slow, canary.count, TAIL, alpha)
    detail = f"{slow}/{canary.count} above {threshold * 1000:.1f} ms"
    if over.rejected:
        return result(Verdict.failed, ratio, over.p_value, detail)
    if rate_test(slow, canary.count, TAIL, alpha, side="below").rejected:
        return result(Verdict.successful, ratio, over.p_value, detail)
    return result(Verdict.inconclusive, ratio, over.p_value, detail + "; not clear yet")


def analyze(window: Window, spec: RolloutSpec) -> list[CheckResult]:
    """Every check's verdict over ``window``."""
    alpha = alpha_per_test(spec)
    out = [_error_check(window, spec, alpha)]
    for name, c, b in (("latency_p95", window.canary.latency, window.baseline.latency),
                       ("ttft_p95", window.canary.ttft, window.baseline.ttft)):
        result = _latency_check(name, c, b, spec, alpha)
        if result is not None:
            out.append(result)
    return out


class StepVerdict(StrEnum):
    """What the checks say about the current step, given its deadline."""

    passed = "passed"  # every check Successful, or the deadline came with none Failed
    failed = "failed"  # some check Failed
    waiting = "waiting"  # not clear yet; the deadline is ahead
    inconclusive = "inconclusive"  # the deadline came without enough data


def step_verdict(results: Sequence[CheckResult], seconds: float,
                 spec: RolloutSpec) -> StepVerdict:
    """Combine the checks: a failure is final; a pass may come early; the deadline decides.

    At the deadline a step passes when every check had its minimum sample and none
    failed ("not significantly worse"); a check still short of samples makes the step
    inconclusive, and ``on_inconclusive`` decides what happens.
    """
    if any(r.verdict is Verdict.failed for r in results):
        return StepVerdict.failed
    if results and all(r.verdict is Verdict.successful for r in results):
        return StepVerdict.passed
    if seconds < spec.interval_s:
        return StepVerdict.waiting
    short = any(min(r.canary_n, r.baseline_n) < spec.min_requests for r in results)
    return StepVerdict.inconclusive if short or not results else StepVerdict.passed
