"""Comparing a Prometheus-shaped histogram with the per-request samples it was built from."""

from __future__ import annotations

import math

from rollout.canary.analysis import Histogram, Samples


def assert_same_observations(hist: object, samples: object, q: float = 0.95) -> None:
    """``hist`` holds exactly ``samples``, each in its bucket, and its ``q`` quantile lies
    in the bucket of the sample at rank ``ceil(q * n)``: the histogram's resolution."""
    assert isinstance(hist, Histogram) and isinstance(samples, Samples)
    assert hist.count == samples.count
    if not samples.values:
        return
    assert hist.bounds[-1] == math.inf
    for bound, cum in zip(hist.bounds, hist.cumulative, strict=True):
        assert cum == sum(1 for v in samples.values if v <= bound), bound
    at_rank = sorted(samples.values)[max(0, math.ceil(q * samples.count) - 1)]
    upper = min(b for b in hist.bounds if b >= at_rank)
    lower = max((b for b in hist.bounds if b < at_rank), default=0.0)
    assert lower <= hist.quantile(q) <= upper, (
        f"p{q * 100:g}: histogram {hist.quantile(q)}, sample at rank {at_rank}, "
        f"exact {samples.quantile(q)}")
