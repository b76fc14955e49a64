"""The status document's time series and recent windows, from samples of the gateway's
routed counters: pure functions (no clock, no I/O) that :class:`serving.gateway.status.
StatusHost` calls once per sample.

A point is the difference of two samples (:func:`point_between`, computed once per
sample): request rate, error rate, and the p95 latency of the answered requests from the
analysis histogram's buckets, interpolated as PromQL's ``histogram_quantile`` does. A
version's recent window (:func:`window_of`) is the difference between now and the oldest
sample inside the window.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field

from rollout.canary import series
from rollout.canary.series import Outcome
from serving.gateway.metrics import RoutedMetrics


class RecentWindow(BaseModel):
    """A version's last ``seconds`` (at most the status host's ``RECENT_S``), by the version
    routing chose."""

    seconds: float
    requests: int = 0
    errors: int = 0  # 5xx, and requests that failed over to production
    rate: float = 0.0  # requests per second
    error_rate: float | None = None
    latency_p50_s: float | None = None  # of the answered requests
    latency_p95_s: float | None = None


class SeriesLine(BaseModel):
    """One version's values, aligned with :attr:`Series.times` (null: no data there)."""

    model: str
    version: int
    rate: list[float | None] = Field(default_factory=list)  # requests per second
    error_rate: list[float | None] = Field(default_factory=list)
    latency_p95_s: list[float | None] = Field(default_factory=list)


class Series(BaseModel):
    interval_s: float
    times: list[float] = Field(default_factory=list)  # UNIX seconds, each interval's end
    versions: list[SeriesLine] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Cumulative:
    """One routed version's counters at a sample: requests, errors, latency buckets."""

    requests: int
    errors: int
    buckets: tuple[int, ...]  # answered requests per analysis bucket (last: above all)

    def minus(self, earlier: Cumulative | None) -> Cumulative:
        if earlier is None:
            return self
        return Cumulative(self.requests - earlier.requests, self.errors - earlier.errors,
                          tuple(a - b for a, b in zip(self.buckets, earlier.buckets,
                                                      strict=True)))

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the answered requests' latency (None: none answered)."""
        from rollout.canary.analysis import Histogram

        total = 0
        cumulative: list[float] = []
        for n in self.buckets:
            total += n
            cumulative.append(total)
        if total <= 0:
            return None
        value = Histogram((*series.ANALYSIS_BUCKETS, math.inf), tuple(cumulative)).quantile(q)
        return None if math.isnan(value) else value


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # UNIX seconds
    values: Mapping[tuple[str, int], Cumulative]


def cumulative_of(routed: RoutedMetrics) -> Cumulative:
    o = routed.outcomes
    return Cumulative(sum(o.values()), o[Outcome.error] + o[Outcome.failover],
                      tuple(routed.duration.counts))


def take_sample(routed: Mapping[tuple[str, int], RoutedMetrics], at: float) -> Sample:
    return Sample(at, {key: cumulative_of(r) for key, r in list(routed.items())})


@dataclass(frozen=True, slots=True)
class Point:
    """The series' values of one interval: (rate, error rate, p95 latency) per version."""

    at: float  # the interval's end
    values: Mapping[tuple[str, int], tuple[float, float | None, float | None]]


def point_between(before: Sample, after: Sample) -> Point | None:
    """The interval from ``before`` to ``after`` (a version absent before starts at 0);
    None when no time passed. Computed once per sample, so a viewer costs no quantiles."""
    dt = after.at - before.at
    if dt <= 0:
        return None
    values: dict[tuple[str, int], tuple[float, float | None, float | None]] = {}
    for key, now in after.values.items():
        d = now.minus(before.values.get(key))
        values[key] = (d.requests / dt, d.errors / d.requests if d.requests else None,
                       d.quantile(0.95))
    return Point(after.at, values)


def series_of(points: Sequence[Point], interval_s: float) -> Series:
    """The points as aligned columns, one line per version (null where it had no data)."""
    keys = sorted({k for p in points for k in p.values})
    lines = {k: SeriesLine(model=k[0], version=k[1]) for k in keys}
    for p in points:
        for key, line in lines.items():
            rate, error_rate, p95 = p.values.get(key, (None, None, None))
            line.rate.append(rate)
            line.error_rate.append(error_rate)
            line.latency_p95_s.append(p95)
    return Series(interval_s=interval_s, times=[p.at for p in points],
                  versions=list(lines.values()))


def series_points(samples: Sequence[Sample], interval_s: float) -> Series:
    """The time series between consecutive samples."""
    points = (point_between(a, b) for a, b in itertools.pairwise(samples))
    return series_of([p for p in points if p is not None], interval_s)


def window_of(samples: Sequence[Sample], now: Sample, seconds: float
              ) -> dict[tuple[str, int], RecentWindow]:
    """Each version's last ``seconds``: ``now`` less the oldest sample inside the window."""
    start = next((s for s in samples if s.at >= now.at - seconds), None)
    out: dict[tuple[str, int], RecentWindow] = {}
    for key, current in now.values.items():
        earlier = None if start is None else start.values.get(key)
        span = now.at - start.at if start is not None and earlier is not None else seconds
        d = current.minus(earlier)
        span = max(span, 1e-9)
        out[key] = RecentWindow(
            seconds=round(span, 3), requests=d.requests, errors=d.errors,
            rate=d.requests / span, error_rate=d.errors / d.requests if d.requests else None,
            latency_p50_s=d.quantile(0.5), latency_p95_s=d.quantile(0.95))
    return out


