"""The Prometheus series the canary analysis reads, by the version routing CHOSE. Pure.

One home for what the gateway writes (``serving.gateway.metrics``) and the Prometheus
source reads (:mod:`rollout.canary.prometheus`): the names, their labels, the outcomes
and the bucket bounds. The gateway's other request metrics are keyed by the version
that *served* a request; these are keyed by the version that was meant to, because a
candidate's request that failed over to production is the candidate's failure
(:func:`outcome_of`), exactly as :class:`~rollout.canary.records.RequestRecord` counts it.

- ``reg_gateway_routed_requests_total{model,version,outcome}``: every finished routed
  request, ``outcome`` one of :class:`Outcome`;
- ``reg_gateway_routed_request_duration_seconds{model,version}``: the duration of the
  ``ok`` ones (the latency check's samples);
- ``reg_gateway_routed_time_to_first_token_seconds{model,version}``: the time to the
  first token of the ``ok`` streams.

Both histograms use :data:`ANALYSIS_BUCKETS`, about 12% apart, so a p95 read from them
is within one such step of the exact one: fine enough for a ``max_latency_ratio`` of
1.25, where the gateway's general latency buckets (a factor 2 to 2.5 apart) are not.
"""

from __future__ import annotations

from enum import StrEnum

REQUESTS = "reg_gateway_routed_requests"  # a counter: exposed as REQUESTS + "_total"
DURATION = "reg_gateway_routed_request_duration_seconds"
TTFT = "reg_gateway_routed_time_to_first_token_seconds"
LABELS = ("model", "version")


class Outcome(StrEnum):
    """How a routed request ended, for the version routing chose."""

    ok = "ok"  # answered with a status below 500 by that version (client errors included)
    error = "error"  # 5xx: the engine failed, or its stream broke after the first byte
    failover = "failover"  # that version failed before any byte; production answered


def outcome_of(status: int, failed_over: bool) -> Outcome:
    """The outcome of a request that ended with HTTP ``status``.

    A client that went away (499) is no error of the version; its duration until then
    is still a latency sample, so a version slow enough that clients give up shows in
    the latency check rather than vanishing from it.
    """
    if failed_over:
        return Outcome.failover
    return Outcome.error if status >= 500 else Outcome.ok


def version_label(version: int) -> str:
    """The ``version`` label value, ``v3``, as on every gateway metric."""
    return f"v{version}"


# Renard's R20 preferred numbers: 20 steps per decade, each 11-14% above the last.
_R20 = (1.0, 1.12, 1.25, 1.4, 1.6, 1.8, 2.0, 2.24, 2.5, 2.8, 3.15, 3.55, 4.0, 4.5, 5.0,
        5.6, 6.3, 7.1, 8.0, 9.0)


def _buckets(low: float, high: float) -> tuple[float, ...]:
    out: list[float] = []
    scale = 1e-3
    while scale < high:
        # round(): 0.0112, not 0.011200000000000002, in the exposition's `le` labels
        out.extend(b for m in _R20 if low <= (b := round(m * scale, 6)) < high)
        scale *= 10
    return (*out, high)


ANALYSIS_BUCKETS = _buckets(0.005, 60.0)  # 5 ms .. 60 s (then +Inf)
