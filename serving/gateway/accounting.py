"""Per-request accounting: what each request, refusal and mirrored request adds to the metrics.

:class:`RequestAccount` follows one routed request: it holds the version's in-flight
gauge up from routing to the last byte, and settles status, duration, time to first
token and tokens exactly once however the request ends (answered, failed over, failed,
client gone). The metric children are looked up once per version
(:meth:`~serving.gateway.metrics.Metrics.for_version`), not per request.

For the canary analysis it also settles the request for the version routing *chose*,
which a failover does not change: one ``reg_gateway_routed_*`` outcome (and its
duration and time to first token when ``ok``), and one
:class:`~rollout.canary.records.RequestRecord` appended to the gateway's
:class:`~rollout.canary.records.RequestLog`. Both sources of the analysis are fed from
this one place, by one rule (:func:`~rollout.canary.series.outcome_of`), so they count
the same requests the same way.
"""

from __future__ import annotations

import time

from rollout.canary.records import RequestLog, RequestRecord
from rollout.canary.series import Outcome, outcome_of
from serving.gateway.metrics import Metrics, RoutedMetrics, VersionMetrics
from serving.gateway.routing import Target


class RequestAccount:
    """Accounting for one request: in-flight gauge, status, duration, TTFT, tokens, and
    the routed version's outcome and record."""

    __slots__ = ("failover_reason", "finished", "m", "metrics", "model", "records", "routed",
                 "stream", "t0", "ttft", "version")

    def __init__(self, metrics: Metrics, records: RequestLog, target: Target, t0: float, *,
                 stream: bool = False) -> None:
        self.metrics = metrics
        self.records = records
        self.t0 = t0
        self.stream = stream
        self.ttft: float | None = None
        self.failover_reason = ""
        self.finished = False
        self.m: VersionMetrics = metrics.for_version(
            target.model, f"v{target.version}", target.stage)
        self.m.in_flight.inc()
        # The version routing chose: switch() moves the served metrics, never these.
        self.model = target.model
        self.version = target.version
        self.routed: RoutedMetrics = metrics.for_routed(target.model, target.version)

    def switch(self, target: Target, reason: str) -> None:
        """The request fails over to ``target``: it is counted there from now on."""
        self.m.in_flight.dec()
        self.m = self.metrics.for_version(target.model, f"v{target.version}", target.stage)
        self.m.in_flight.inc()
        self.failover_reason = reason

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.t0

    def finish(self, code: int, tokens: tuple[int, int] | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        seconds = time.perf_counter() - self.t0
        m = self.m
        m.in_flight.dec()
        m.requests(code).inc()
        m.duration.observe(seconds)
        if code == 200 and self.ttft is not None:
            m.ttft.observe(self.ttft)
        if tokens is not None:
            m.prompt_tokens.inc(tokens[0])
            m.output_tokens.inc(tokens[1])
        outcome = outcome_of(code, bool(self.failover_reason))
        routed = self.routed
        routed.outcomes[outcome] += 1
        ok = outcome is Outcome.ok
        ttft = self.ttft if ok and self.stream else None
        if ok:
            routed.duration.observe(seconds)
            if ttft is not None:
                routed.ttft.observe(ttft)
        self.records.append(RequestRecord(time.time(), self.model, self.version, ok, seconds,
                                          ttft))


def rejected(metrics: Metrics, reason: str, status: int) -> None:
    """A request refused before it was routed (bad request, unknown model, auth, overload)."""
    metrics.rejected.labels(reason, str(status)).inc()


def failed_over(metrics: Metrics, source: Target, to: Target, reason: str) -> None:
    metrics.failovers.labels(to.model, f"v{source.version}", f"v{to.version}", reason).inc()


def replica_failed_over(metrics: Metrics, replica: str, status: int) -> None:
    """A replica failed before any byte: the request goes on to the next replica."""
    reason = "engine_down" if status == 503 else f"http_{status}"
    metrics.replica_failovers.labels(replica, reason).inc()


def shadow_dropped(metrics: Metrics, target: Target) -> None:
    """A mirror not sent: as many shadow requests as allowed are in flight already."""
    metrics.shadow.labels(target.model, f"v{target.version}", target.stage, "dropped").inc()


def shadow_done(metrics: Metrics, target: Target, code: str, seconds: float) -> None:
    labels = (target.model, f"v{target.version}", target.stage)
    metrics.shadow.labels(*labels, code).inc()
    metrics.shadow_duration.labels(*labels).observe(seconds)
