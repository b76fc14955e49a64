"""Per-request accounting: what each request, refusal and mirrored request adds to the metrics.

:class:`RequestAccount` follows one routed request: it holds the version's in-flight
gauge up from routing to the last byte, and settles status, duration, time to first
token and tokens exactly once however the request ends (answered, failed over, failed,
client gone). The metric children are looked up once per version
(:meth:`~serving.gateway.metrics.Metrics.for_version`), not per request.
"""

from __future__ import annotations

import time

from serving.gateway.metrics import Metrics, VersionMetrics
from serving.gateway.routing import Target


class RequestAccount:
    """Accounting for one request: in-flight gauge, status, duration, TTFT, tokens."""

    __slots__ = ("failover_reason", "finished", "m", "metrics", "t0", "ttft")

    def __init__(self, metrics: Metrics, target: Target, t0: float) -> None:
        self.metrics = metrics
        self.t0 = t0
        self.ttft: float | None = None
        self.failover_reason = ""
        self.finished = False
        self.m: VersionMetrics = metrics.for_version(
            target.model, f"v{target.version}", target.stage)
        self.m.in_flight.inc()

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
        m = self.m
        m.in_flight.dec()
        m.requests(code).inc()
        m.duration.observe(time.perf_counter() - self.t0)
        if code == 200 and self.ttft is not None:
            m.ttft.observe(self.ttft)
        if tokens is not None:
            m.prompt_tokens.inc(tokens[0])
            m.output_tokens.inc(tokens[1])


def rejected(metrics: Metrics, reason: str, status: int) -> None:
    """A request refused before it was routed (bad request, unknown model, auth, overload)."""
    metrics.rejected.labels(reason, str(status)).inc()


def failed_over(metrics: Metrics, source: Target, to: Target, reason: str) -> None:
    metrics.failovers.labels(to.model, f"v{source.version}", f"v{to.version}", reason).inc()


def shadow_dropped(metrics: Metrics, target: Target) -> None:
    """A mirror not sent: as many shadow requests as allowed are in flight already."""
    metrics.shadow.labels(target.model, f"v{target.version}", target.stage, "dropped").inc()


def shadow_done(metrics: Metrics, target: Target, code: str, seconds: float) -> None:
    labels = (target.model, f"v{target.version}", target.stage)
    metrics.shadow.labels(*labels, code).inc()
    metrics.shadow_duration.labels(*labels).observe(seconds)
