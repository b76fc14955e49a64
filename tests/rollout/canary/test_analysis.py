"""rollout.canary.analysis: verdicts over recorded windows (pure, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from recipes.schema import RolloutSpec
from rollout.canary.analysis import (
    CheckResult,
    Histogram,
    Samples,
    Side,
    StepVerdict,
    Verdict,
    Window,
    analyze,
    step_verdict,
)

SideFactory = Callable[..., Side]


def spec(**overrides: Any) -> RolloutSpec:
    base: dict[str, Any] = {"steps": [{"weight": 5}, {"weight": 25}, {"weight": 50},
                                      {"weight": 100}]}
    return RolloutSpec.model_validate({**base, **overrides})


@pytest.fixture
def make_side() -> SideFactory:
    rng = np.random.default_rng(7)

    def make(n: int, *, error_rate: float = 0.0, latency_s: float = 0.1,
             extra_s: float = 0.0, ttft: bool = False) -> Side:
        lat = tuple(float(x) + extra_s for x in rng.lognormal(math.log(latency_s), 0.2, n))
        errors = int(rng.binomial(n, error_rate)) if error_rate else 0
        ttfts = tuple(x / 4 for x in lat) if ttft else ()
        return Side(requests=n, errors=errors, latency=Samples(lat), ttft=Samples(ttfts))

    return make


def values(side: Side) -> tuple[float, ...]:
    assert isinstance(side.latency, Samples)
    return side.latency.values


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def test_too_few_requests_is_inconclusive_whatever_the_errors(make_side: SideFactory) -> None:
    w = Window(canary=Side(requests=10, errors=10), baseline=make_side(200), seconds=1)
    r = by_name(analyze(w, spec()))["error_rate"]
    assert r.verdict is Verdict.inconclusive and "waiting for 50" in r.detail


def test_twenty_percent_errors_fail_with_the_values(make_side: SideFactory) -> None:
    w = Window(canary=make_side(60, error_rate=0.2), baseline=make_side(1000), seconds=3)
    r = by_name(analyze(w, spec()))["error_rate"]
    assert r.verdict is Verdict.failed
    assert r.value is not None and r.value > 0.1 and r.canary_n == 60
    assert r.p_value < 0.01 / 16
    assert "error_rate Failed" in r.describe()


def test_worse_than_the_baseline_fails_even_under_a_lax_ceiling(make_side: SideFactory) -> None:
    w = Window(canary=Side(requests=400, errors=40), baseline=Side(requests=4000, errors=40),
               seconds=5)
    r = by_name(analyze(w, spec(max_error_rate=0.5)))["error_rate"]
    assert r.verdict is Verdict.failed and "worse than the baseline" in r.detail


def test_many_clean_requests_pass_the_error_check_early(make_side: SideFactory) -> None:
    w = Window(canary=Side(requests=2000), baseline=Side(requests=20000), seconds=2)
    assert by_name(analyze(w, spec()))["error_rate"].verdict is Verdict.successful


def test_added_latency_fails_the_latency_check(make_side: SideFactory) -> None:
    w = Window(canary=make_side(80, extra_s=0.2), baseline=make_side(800), seconds=3)
    r = by_name(analyze(w, spec()))["latency_p95"]
    assert r.verdict is Verdict.failed
    assert r.value is not None and r.value > 1.25


def test_one_slow_request_in_a_small_sample_is_inconclusive_then_successful(
    make_side: SideFactory,
) -> None:
    fast = make_side(60)
    slow_one = Side(requests=60, latency=Samples((*values(fast)[:59], 5.0)))
    baseline = make_side(2000)
    first = by_name(analyze(Window(slow_one, baseline, 2), spec()))["latency_p95"]
    assert first.verdict is Verdict.inconclusive
    more = make_side(600)
    later = Side(requests=660, latency=Samples((*values(slow_one), *values(more))))
    assert by_name(analyze(Window(later, baseline, 8), spec()))["latency_p95"].verdict is (
        Verdict.successful)


def test_ttft_is_checked_only_when_streams_were_seen(make_side: SideFactory) -> None:
    without = analyze(Window(make_side(100), make_side(100), 1), spec())
    assert "ttft_p95" not in by_name(without)
    with_streams = analyze(Window(make_side(100, ttft=True), make_side(100, ttft=True), 1),
                           spec())
    assert "ttft_p95" in by_name(with_streams)


@pytest.mark.parametrize(("verdicts", "seconds", "expected"), [
    pytest.param([Verdict.failed, Verdict.successful], 1, StepVerdict.failed, id="any-failed"),
    pytest.param([Verdict.successful, Verdict.successful], 1, StepVerdict.passed,
                 id="all-clear-early"),
    pytest.param([Verdict.successful, Verdict.inconclusive], 1, StepVerdict.waiting,
                 id="not-clear-before-deadline"),
    pytest.param([Verdict.successful, Verdict.inconclusive], 10, StepVerdict.passed,
                 id="deadline-with-samples-and-no-failure"),
])
def test_step_verdict(verdicts: list[Verdict], seconds: float, expected: StepVerdict) -> None:
    results = [CheckResult(f"c{i}", v, 0.0, 1.0, 100, 100, 1.0, "") for i, v in
               enumerate(verdicts)]
    assert step_verdict(results, seconds, spec(interval="10s")) is expected


def test_deadline_without_enough_samples_is_inconclusive() -> None:
    results = [CheckResult("error_rate", Verdict.inconclusive, None, 0.01, 3, 400, 1.0, "")]
    assert step_verdict(results, 11, spec(interval="10s")) is StepVerdict.inconclusive


def test_a_histogram_reads_like_its_samples(make_side: SideFactory) -> None:
    side = make_side(5000)
    raw = np.asarray(values(side))
    bounds = (*[0.005 * 1.15**i for i in range(60)], math.inf)
    cumulative = tuple(float(np.count_nonzero(raw <= b)) for b in bounds)
    hist = Histogram(bounds, cumulative)
    assert hist.count == 5000
    assert hist.quantile(0.95) == pytest.approx(side.latency.quantile(0.95), rel=0.05)
    assert hist.count_above(0.2) == pytest.approx(side.latency.count_above(0.2), abs=25)


def test_histogram_and_samples_reach_the_same_verdicts(make_side: SideFactory) -> None:
    def as_hist(s: Side) -> Side:
        raw = np.asarray(values(s))
        bounds = (*[0.005 * 1.1**i for i in range(80)], math.inf)
        return Side(s.requests, s.errors,
                    Histogram(bounds, tuple(float(np.count_nonzero(raw <= b))
                                            for b in bounds)))
    for extra in (0.0, 0.2):
        c, b = make_side(300, extra_s=extra), make_side(3000)
        raw = by_name(analyze(Window(c, b, 5), spec()))["latency_p95"].verdict
        hist = by_name(analyze(Window(as_hist(c), as_hist(b), 5), spec()))["latency_p95"]
        assert hist.verdict is raw, (extra, hist.describe())
