"""The gateway's Prometheus metrics, per model, version and stage.

vLLM labels all its request metrics with the base model's name, even for
adapter requests, so per-version numbers can only come from here. Each gateway
owns a :class:`CollectorRegistry` (not the global one), so several apps can
live in one process (tests, benchmarks). Names follow Prometheus conventions
and pass ``promtool check metrics``.

Most request metrics are keyed by the version that *served* a request. The canary
analysis needs them by the version routing *chose* (a failover is the chosen version's
failure): the ``reg_gateway_routed_*`` series, defined in :mod:`rollout.canary.series`,
which the Prometheus metric source reads back.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from recipes.data.drift import FEATURES
from rollout.canary import series
from rollout.canary.series import Outcome

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
VERSION_LABELS = ("model", "version", "stage")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class VersionMetrics:
    """The labelled children for one (model, version, stage), looked up once and kept:
    ``.labels()`` costs a lock and a dict lookup per call, on every request otherwise."""

    __slots__ = ("_codes", "_labels", "_requests", "duration", "in_flight", "output_tokens",
                 "prompt_tokens", "ttft")

    def __init__(self, m: Metrics, labels: tuple[str, str, str]) -> None:
        self._requests = m.requests
        self._codes: dict[int, Any] = {}
        self.duration = m.duration.labels(*labels)
        self.ttft = m.ttft.labels(*labels)
        self.prompt_tokens = m.prompt_tokens.labels(*labels)
        self.output_tokens = m.output_tokens.labels(*labels)
        self.in_flight = m.in_flight.labels(*labels)
        self._labels = labels

    def requests(self, code: int) -> Any:
        """The request counter child for one status code."""
        c = self._codes.get(code)
        if c is None:
            c = self._codes[code] = self._requests.labels(*self._labels, str(code))
        return c


class RoutedBuckets:
    """One histogram child of the analysis series: plain counts per bucket and a sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(series.ANALYSIS_BUCKETS) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: the first bound >= seconds, Prometheus's `le` (less than or equal)
        self.counts[bisect.bisect_left(series.ANALYSIS_BUCKETS, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip(_BUCKET_LABELS, list(self.counts), strict=True):
            total += n
            out.append((bound, total))
        return out


class RoutedMetrics:
    """The ``reg_gateway_routed_*`` values of one (model, version routing chose).

    Plain numbers, not prometheus_client children: they are updated on the event loop
    and read by the same loop when ``/metrics`` renders, so they need none of the lock a
    child takes per update, and a bucket is found by bisection rather than a scan over
    the ~80 analysis buckets. Every outcome is exported from the version's first request
    on (at 0), so a version's error series exists before its first error.
    """

    __slots__ = ("duration", "outcomes", "ttft")

    def __init__(self) -> None:
        self.outcomes = dict.fromkeys(Outcome, 0)
        self.duration = RoutedBuckets()
        self.ttft = RoutedBuckets()


_BUCKET_LABELS = (*(repr(b) for b in series.ANALYSIS_BUCKETS), "+Inf")


class _RoutedCollector(Collector):
    def __init__(self, routed: Mapping[tuple[str, int], RoutedMetrics]) -> None:
        self.routed = routed

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            series.REQUESTS,
            "Finished requests by the version routing chose (before any failover) and "
            "outcome: ok (status below 500), error (5xx), failover (that version failed "
            "and production answered).",
            labels=[*series.LABELS, "outcome"])
        duration = HistogramMetricFamily(
            series.DURATION,
            "Time from receiving a request to sending its last byte, for requests the "
            "version routing chose answered (outcome ok); buckets fine enough for p95 ratios.",
            labels=series.LABELS)
        ttft = HistogramMetricFamily(
            series.TTFT,
            "Time from receiving a streaming request to sending its first generated token, "
            "for streams the version routing chose answered (outcome ok).",
            labels=series.LABELS)
        for (model, version), r in sorted(self.routed.items()):
            labels = [model, series.version_label(version)]
            for outcome, n in r.outcomes.items():
                requests.add_metric([*labels, outcome.value], n)
            duration.add_metric(labels, r.duration.cumulative(), r.duration.sum)
            ttft.add_metric(labels, r.ttft.cumulative(), r.ttft.sum)
        yield from (requests, duration, ttft)


class Metrics:
    """Every metric the gateway exports. Label values for versions are ``v3``, never ``3``."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str, str], VersionMetrics] = {}
        self._routed: dict[tuple[str, int], RoutedMetrics] = {}
        r = self.registry = CollectorRegistry(auto_describe=True)
        r.register(_RoutedCollector(self._routed))
        self.requests = Counter(
            "reg_gateway_requests", "Requests answered, by served version and HTTP status code.",
            [*VERSION_LABELS, "code"], registry=r,
        )
        self.duration = Histogram(
            "reg_gateway_request_duration_seconds",
            "Time from receiving a request to sending its last byte.",
            VERSION_LABELS, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "reg_gateway_time_to_first_token_seconds",
            "Time from receiving a request to sending its first generated token (streams) "
            "or the whole answer (non-streaming).",
            VERSION_LABELS, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.prompt_tokens = Counter(
            "reg_gateway_prompt_tokens", "Prompt tokens of answered requests.",
            VERSION_LABELS, registry=r,
        )
        self.output_tokens = Counter(
            "reg_gateway_output_tokens", "Generated tokens of answered requests.",
            VERSION_LABELS, registry=r,
        )
        self.in_flight = Gauge(
            "reg_gateway_in_flight_requests", "Requests being answered now.",
            VERSION_LABELS, registry=r,
        )
        self.shadow = Counter(
            "reg_gateway_shadow_requests",
            "Mirrored (shadow) requests, by the version they were mirrored to and its status "
            "code; their answers are measured, never returned.",
            [*VERSION_LABELS, "code"], registry=r,
        )
        self.shadow_duration = Histogram(
            "reg_gateway_shadow_request_duration_seconds", "Duration of shadow requests.",
            VERSION_LABELS, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.failovers = Counter(
            "reg_gateway_failovers",
            "Requests retried on the production version after the chosen version failed "
            "before any byte was sent.",
            ["model", "from_version", "to_version", "reason"], registry=r,
        )
        self.rejected = Counter(
            "reg_gateway_rejected_requests",
            "Requests refused before routing (unknown model, auth, overload, engine down).",
            ["reason", "code"], registry=r,
        )
        self.engine_up = Gauge(
            "reg_engine_up", "1 when the engine answers its health check, else 0.",
            ["engine"], registry=r,
        )
        self.engine_restarts = Counter(
            "reg_engine_restarts", "Times the supervisor restarted an engine.", ["engine"],
            registry=r,
        )
        self.adapters_loaded = Gauge(
            "reg_engine_adapters_loaded", "LoRA adapters loaded in the engine.", ["engine"],
            registry=r,
        )
        self.adapter_slots = Gauge(
            "reg_engine_adapter_slots",
            "Adapters the engine can mix in one batch (vLLM's --max-loras, REG_MAX_LORAS); "
            "requests for adapters beyond them wait for a slot.", ["engine"], registry=r,
        )
        # Per replica (`engine` is the served name, ``#i`` for replicas after the first).
        self.replica_requests = Counter(
            "reg_engine_requests", "Requests the gateway sent to each engine replica.",
            ["engine"], registry=r,
        )
        self.replica_failovers = Counter(
            "reg_engine_replica_failovers",
            "Requests retried on another replica after one failed before any byte.",
            ["engine", "reason"], registry=r,
        )
        self.replica_waiting = Gauge(
            "reg_engine_requests_waiting",
            "vLLM's queue on each replica (vllm:num_requests_waiting, last scrape).",
            ["engine"], registry=r,
        )
        self.replica_running = Gauge(
            "reg_engine_requests_running",
            "Requests running on each replica (vllm:num_requests_running, last scrape).",
            ["engine"], registry=r,
        )
        self.replica_load_age = Gauge(
            "reg_engine_load_age_seconds",
            "Seconds since each replica's /metrics was last scraped; beyond the stale "
            "limit (2 s) routing ranks it last.", ["engine"], registry=r,
        )
        self.replica_in_flight = Gauge(
            "reg_engine_in_flight_requests",
            "Requests this gateway has open on each replica.", ["engine"], registry=r,
        )
        self.traffic_weight = Gauge(
            "reg_traffic_weight_ratio",
            "Share of a model's traffic routed to each stage (0-1), with the stage's version.",
            VERSION_LABELS, registry=r,
        )
        self.shadow_weight = Gauge(
            "reg_traffic_shadow_ratio",
            "Share of a model's production requests mirrored to a stage (0-1).",
            VERSION_LABELS, registry=r,
        )
        self.servable = Gauge(
            "reg_deployment_servable",
            "1 when a deployed version (a stage points at it) can be served, 0 when it is "
            "degraded: its adapter failed to fetch or load (the gateway's /api/status "
            "says why; the supervisor retries with a backoff).",
            VERSION_LABELS, registry=r,
        )
        # Drift (serving/gateway/drift.py, docs/drift.md): per version, not per stage.
        self.drift_psi = Gauge(
            "reg_drift_psi",
            "Population stability index of the prompts a version was asked in the last hour "
            "against its training prompts, per feature (length: prompt tokens in "
            "power-of-two bins; tokens: the training prompts' 32 most frequent token ids "
            "and `other`). Below 0.1 stable, 0.1-0.25 moderate, above 0.25 significant.",
            ["model", "version", "feature"], registry=r,
        )
        self.drift_samples = Gauge(
            "reg_drift_samples",
            "Prompts in a version's drift window (the last hour); its PSI is noisy below "
            "100.", ["model", "version"], registry=r,
        )
        self.drift_reference = Gauge(
            "reg_drift_reference",
            "1 when a deployed version's training data recorded a prompt reference to "
            "compare with, 0 when it did not (trained before references were recorded).",
            ["model", "version"], registry=r,
        )
        self.drift_dropped = Counter(
            "reg_drift_dropped_prompts",
            "Prompts left out of the drift window: queue_full (the tokenising queue was "
            "full: the gateway was busier than the drift worker) or unreadable (no prompt "
            "could be tokenised from the body).", ["reason"], registry=r,
        )
        for reason in ("queue_full", "unreadable"):
            self.drift_dropped.labels(reason)
        self.policy_marker = Gauge(
            "reg_gateway_policy_marker",
            "The registry change marker the gateway's routing snapshot was built from.",
            registry=r,
        )

    def for_version(self, model: str, version: str, stage: str) -> VersionMetrics:
        """Cached children per (model, version, stage); the hot path calls this."""
        key = (model, version, stage)
        v = self._versions.get(key)
        if v is None:
            v = self._versions[key] = VersionMetrics(self, key)
        return v

    def for_routed(self, model: str, version: int) -> RoutedMetrics:
        """Cached children per (model, version routing chose); the hot path calls this."""
        key = (model, version)
        v = self._routed.get(key)
        if v is None:
            v = self._routed[key] = RoutedMetrics()
        return v

    @property
    def routed(self) -> Mapping[tuple[str, int], RoutedMetrics]:
        """Every routed version's values, by (model, version): read on the event loop."""
        return self._routed

    def set_traffic(
        self,
        weights: Iterable[tuple[str, str, str, float]],
        shadows: Iterable[tuple[str, str, str, float]],
    ) -> None:
        """Replace the traffic gauges: rows of (model, version, stage, share 0-1)."""
        self.traffic_weight.clear()
        for model, version, stage, share in weights:
            self.traffic_weight.labels(model, version, stage).set(share)
        self.shadow_weight.clear()
        for model, version, stage, share in shadows:
            self.shadow_weight.labels(model, version, stage).set(share)

    def set_engines(self, up: Mapping[str, bool], adapters: Mapping[str, int],
                    slots: Mapping[str, int] | None = None) -> None:
        for engine, ok in up.items():
            self.engine_up.labels(engine).set(1 if ok else 0)
            self.engine_restarts.labels(engine)  # exported at 0 before the first restart
        for engine, n in adapters.items():
            self.adapters_loaded.labels(engine).set(n)
        for engine, n in (slots or {}).items():
            self.adapter_slots.labels(engine).set(n)

    def set_replica_loads(self, rows: Iterable[tuple[str, float, float, float, int]]) -> None:
        """Replace the per-replica load gauges: (engine, waiting, running, age s, in flight)."""
        gauges = (self.replica_waiting, self.replica_running, self.replica_load_age,
                  self.replica_in_flight)
        for g in gauges:
            g.clear()
        for engine, *values in rows:
            for g, v in zip(gauges, values, strict=True):
                g.labels(engine).set(v)

    def set_servable(self, rows: Iterable[tuple[str, str, str, bool]]) -> None:
        """Replace the servable gauge: rows of (model, version, stage, servable)."""
        self.servable.clear()
        for model, version, stage, ok in rows:
            self.servable.labels(model, version, stage).set(1 if ok else 0)

    def set_drift(self, model: str, version: str, reference: bool, samples: int,
                  psi: Mapping[str, float]) -> None:
        """One version's drift gauges; a feature with no PSI (no samples yet) exports none."""
        self.drift_reference.labels(model, version).set(1 if reference else 0)
        if not reference:
            return
        self.drift_samples.labels(model, version).set(samples)
        for feature in FEATURES:
            if feature in psi:
                self.drift_psi.labels(model, version, feature).set(psi[feature])
            else:
                with contextlib.suppress(KeyError):
                    self.drift_psi.remove(model, version, feature)

    def drop_drift(self, model: str, version: str) -> None:
        """A version no longer deployed: its drift series end."""
        for gauge in (self.drift_reference, self.drift_samples):
            with contextlib.suppress(KeyError):
                gauge.remove(model, version)
        for feature in FEATURES:
            with contextlib.suppress(KeyError):
                self.drift_psi.remove(model, version, feature)

    def render(self) -> bytes:
        return generate_latest(self.registry)
