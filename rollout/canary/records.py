"""The gateway's per-request records, as a metric source for the canary analysis.

The gateway appends one :class:`RequestRecord` per finished request, keyed by the
version that was *meant* to serve it: a candidate's request that failed over to
production counts as the candidate's failure, since failover hides exactly the
errors the analysis must see. :class:`RequestLog` keeps the recent records in memory
(a bounded deque per model; appends are atomic under the GIL, readers copy) and
answers :meth:`window` with per-request latencies, which allow rank-exact tails.

This is the default source when the controller runs inside ``reg serve``; Prometheus
(``rollout.canary.prometheus``) serves when it runs elsewhere.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from rollout.canary.analysis import Samples, Side, Window


@dataclass(frozen=True, slots=True)  # slots: the log holds up to `capacity` per model
class RequestRecord:
    at: float  # UNIX seconds when it finished
    model: str
    version: int  # the version routing chose (before any failover)
    ok: bool  # False: 5xx, engine error, or served only after failing over
    latency_s: float
    ttft_s: float | None = None  # streaming requests: time to the first token


class MetricSource(Protocol):
    """Where the controller reads a window of candidate and baseline measurements."""

    def window(self, model: str, canary: int, baseline: int, since: datetime,
               until: datetime, baseline_since: datetime | None = None) -> Window:
        """Both sides from ``since`` to ``until``; the baseline from ``baseline_since``
        when given (at 100% canary weight the baseline serves nothing concurrently)."""
        ...


class RequestLog:
    """The most recent ``capacity`` records of each model, in memory."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._by_model: dict[str, collections.deque[RequestRecord]] = {}
        self._lock = threading.Lock()  # guards creating a model's deque, not appends

    def append(self, record: RequestRecord) -> None:
        log = self._by_model.get(record.model)
        if log is None:
            with self._lock:
                log = self._by_model.setdefault(
                    record.model, collections.deque(maxlen=self.capacity))
        log.append(record)

    def records(self, model: str) -> list[RequestRecord]:
        """A copy of the model's records, oldest first."""
        return list(self._by_model.get(model, ()))

    def window(self, model: str, canary: int, baseline: int, since: datetime,
               until: datetime, baseline_since: datetime | None = None) -> Window:
        start, end = since.timestamp(), until.timestamp()
        base_start = start if baseline_since is None else baseline_since.timestamp()
        records = list(self._by_model.get(model, ()))
        sides = {canary: _SideBuilder(), baseline: _SideBuilder()}
        for r in records:
            if r.at <= end and r.version in sides and r.at >= (
                    start if r.version == canary else base_start):
                sides[r.version].add(r)
        return Window(canary=sides[canary].build(), baseline=sides[baseline].build(),
                      seconds=max(0.0, end - start))


class _SideBuilder:
    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.ttfts: list[float] = []

    def add(self, r: RequestRecord) -> None:
        self.requests += 1
        if not r.ok:
            self.errors += 1
            return
        self.latencies.append(r.latency_s)
        if r.ttft_s is not None:
            self.ttfts.append(r.ttft_s)

    def build(self) -> Side:
        return Side(self.requests, self.errors, Samples(tuple(self.latencies)),
                    Samples(tuple(self.ttfts)))
