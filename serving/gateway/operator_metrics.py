"""Operator metrics: what the registry knows, exported on the gateway's ``/metrics``.

The request metrics (:mod:`serving.gateway.metrics`) say what the gateway did; operators
also need what the controllers decided: each model's rollout (phase, step, canary
weight, the last analysis values), how rollouts ended, what the reconciler recorded and
the training runs. All of it lives in the registry, so :class:`OperatorMetrics` reads it
there, off the hot path:

1. a daemon thread reads the registry every ``refresh_s`` (:class:`RegistryReader`):
   the newest rollout of each model, the run counts, and the audit events since the
   last read (counted incrementally: one query that returns nothing when nothing
   happened);
2. each read becomes an immutable :class:`OperatorSnapshot`, swapped in whole;
3. a scrape (:meth:`OperatorMetrics.collect`, a prometheus_client ``Collector``) turns
   the current snapshot into metric families (:func:`families`, pure) and never
   touches the database, so a slow registry delays the numbers, not ``/metrics``.

A failed read keeps the previous snapshot and counts the failure
(``reg_operator_refresh_errors_total``); ``reg_operator_refresh_timestamp_seconds``
says how fresh the numbers are. Counters here count rows of the append-only audit log,
so they only grow and survive a gateway restart (a restart re-counts from the log).
Every outcome, reconcile kind and run status a model can have is exported from the
start at 0, so ``increase()`` sees the first rolled-back canary or failed reconcile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from registry.runs import RunStatus
from rollout.canary.analysis import Verdict
from rollout.canary.phases import TERMINAL, Phase
from rollout.gitops.apply import Event as ReconcileEvent

if TYPE_CHECKING:
    from registry.rollouts import RolloutPublic

log = logging.getLogger("reg.serving")

DEFAULT_REFRESH_S = 5.0
RECONCILE_PREFIX = "reconcile."
ROLLOUT_PREFIX = "rollout."
OUTCOMES: tuple[str, ...] = tuple(p.value for p in Phase if p in TERMINAL)
RECONCILE_KINDS: tuple[str, ...] = tuple(e.value for e in ReconcileEvent)
# The audit events counted: what the reconciler records, and the ends of rollouts.
EVENT_KINDS = [*RECONCILE_KINDS, *(ROLLOUT_PREFIX + o for o in OUTCOMES)]


@dataclass(frozen=True)
class CheckView:
    """One check of a rollout's last analysis, as ``Registry.note_rollout_analysis`` stores
    it (the canary controller's ``CheckResult``)."""

    name: str
    verdict: str
    value: float | None  # the candidate's error rate, or its p95 ratio over the baseline's
    limit: float
    canary_n: int
    baseline_n: int
    p_value: float


@dataclass(frozen=True)
class RolloutView:
    """The newest rollout of one model: the active one, else the last that ended."""

    id: int
    model: str
    candidate: int
    baseline: int | None
    phase: str
    active: bool
    step: int  # index into the plan's steps; -1 before the first
    steps: int
    weight: int  # percent
    failures: int
    analysis: tuple[CheckView, ...] = ()


@dataclass(frozen=True)
class OperatorSnapshot:
    """One read of the registry, all the operator metrics are made of."""

    models: tuple[str, ...] = ()
    rollouts: tuple[RolloutView, ...] = ()
    finished: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (model, outcome)
    reconcile: Mapping[str, int] = field(default_factory=dict)  # event kind -> count
    runs: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (model, status)
    read_at: float = 0.0  # UNIX seconds; 0 before the first read


class OperatorRegistry(Protocol):
    """The few registry reads this module makes (``registry.api.Registry`` has them)."""

    def list_models(self) -> Sequence[Any]: ...

    def list_rollouts(self, model: str | None = None, *, active: bool | None = None,
                      limit: int | None = None) -> list[RolloutPublic]: ...

    def run_summaries(self) -> Sequence[Any]: ...

    def events(self, since_id: int | None = None, *,
               kinds: list[str] | None = None) -> Sequence[Any]: ...


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def check_view(raw: Mapping[str, Any]) -> CheckView | None:
    """A stored analysis entry as a :class:`CheckView`; None for one of another shape."""
    try:
        return CheckView(
            name=str(raw["name"]), verdict=str(raw["verdict"]), value=_float(raw.get("value")),
            limit=float(raw["limit"]), canary_n=int(raw["canary_n"]),
            baseline_n=int(raw["baseline_n"]), p_value=float(raw["p_value"]))
    except (KeyError, TypeError, ValueError):
        return None


def rollout_view(row: RolloutPublic) -> RolloutView:
    steps = row.plan.get("steps")
    checks = (check_view(a) for a in row.analysis if isinstance(a, Mapping))
    return RolloutView(
        id=row.id, model=row.model, candidate=row.candidate, baseline=row.baseline,
        phase=row.phase, active=row.active, step=row.step,
        steps=len(steps) if isinstance(steps, list) else 0, weight=row.weight,
        failures=row.failures, analysis=tuple(c for c in checks if c is not None))


def count_events(events: Iterable[Any], reconcile: Tally[str],
                 finished: Tally[tuple[str, str]]) -> int:
    """Add reconcile kinds and finished rollouts (``rollout.<terminal phase>``) of
    ``events`` to the tallies; returns the largest event id seen (0 when none)."""
    last = 0
    for ev in events:
        last = max(last, int(ev.id))
        kind = str(ev.kind)
        if kind.startswith(RECONCILE_PREFIX):
            reconcile[kind] += 1
        elif kind.startswith(ROLLOUT_PREFIX) and ev.model:
            outcome = kind.removeprefix(ROLLOUT_PREFIX)
            if outcome in OUTCOMES:
                finished[(str(ev.model), outcome)] += 1
    return last


class RegistryReader:
    """Reads an :class:`OperatorSnapshot`; keeps the event tallies between reads.

    Not thread-safe: one thread (the refresher, or a test) calls :meth:`read`.
    """

    def __init__(self, registry: OperatorRegistry) -> None:
        self.registry = registry
        self._last_event = 0
        self._reconcile: Tally[str] = Tally()
        self._finished: Tally[tuple[str, str]] = Tally()

    def read(self) -> OperatorSnapshot:
        reg = self.registry
        models = tuple(sorted(m.name for m in reg.list_models()))
        rows = {r.model: r for r in reg.list_rollouts(active=True)}
        for name in models:
            if name not in rows:
                newest = reg.list_rollouts(name, limit=1)
                if newest:
                    rows[name] = newest[0]
        runs: Tally[tuple[str, str]] = Tally(
            (str(r.model), str(r.status)) for r in reg.run_summaries())
        # Counted into copies, kept only once the whole read succeeded: a read that fails
        # halfway is redone from the same event id, counting nothing twice.
        reconcile, finished = Tally(self._reconcile), Tally(self._finished)
        last = count_events(reg.events(self._last_event or None, kinds=EVENT_KINDS),
                            reconcile, finished)
        self._reconcile, self._finished = reconcile, finished
        self._last_event = max(self._last_event, last)
        return OperatorSnapshot(
            models=models, rollouts=tuple(rollout_view(rows[m]) for m in sorted(rows)),
            finished=dict(finished), reconcile=dict(reconcile), runs=dict(runs),
            read_at=time.time())


def _version(n: int | None) -> str:
    return "" if n is None else f"v{n}"


def families(snap: OperatorSnapshot) -> list[Metric]:
    """The operator metric families of one snapshot (pure)."""
    rl = ["model", "version"]
    info = GaugeMetricFamily(
        "reg_rollout_info", "The newest rollout of each model (1): its id and the baseline "
        "version production served when it started.", labels=[*rl, "rollout", "baseline"])
    phase = GaugeMetricFamily(
        "reg_rollout_phase", "1 for the phase the newest rollout of each model is in, 0 for "
        "the others.", labels=[*rl, "phase"])
    active = GaugeMetricFamily(
        "reg_rollout_active", "1 while the rollout runs, 0 once it ended.", labels=rl)
    step = GaugeMetricFamily(
        "reg_rollout_step", "The rollout's current step, counted from 1 (0 before the first).",
        labels=rl)
    steps = GaugeMetricFamily("reg_rollout_steps", "Steps in the rollout's plan.", labels=rl)
    weight = GaugeMetricFamily(
        "reg_rollout_canary_weight_ratio", "The candidate's share of the model's traffic that "
        "the rollout set (0-1).", labels=rl)
    failures = GaugeMetricFamily(
        "reg_rollout_failures", "Failed analyses of the rollout so far (it rolls back at its "
        "failure limit).", labels=rl)
    cl = [*rl, "check"]
    value = GaugeMetricFamily(
        "reg_rollout_analysis_value", "Last analysis: the candidate's value per check "
        "(error_rate: its error rate; latency_p95, ttft_p95: its p95 over the baseline's).",
        labels=cl)
    limit = GaugeMetricFamily(
        "reg_rollout_analysis_limit", "Last analysis: each check's limit (max error rate, max "
        "latency ratio).", labels=cl)
    p_value = GaugeMetricFamily(
        "reg_rollout_analysis_p_value", "Last analysis: the always-valid p-value of each "
        "check's failure test (small: the candidate is clearly worse).", labels=cl)
    samples = GaugeMetricFamily(
        "reg_rollout_analysis_samples", "Last analysis: requests (or latency samples) each "
        "check counted, per side (canary: the candidate, baseline: production's version).",
        labels=[*cl, "side"])
    verdict = GaugeMetricFamily(
        "reg_rollout_analysis_verdict", "Last analysis: 1 for each check's verdict "
        "(Successful, Failed, Inconclusive), 0 for the others.", labels=[*cl, "verdict"])
    for r in snap.rollouts:
        labels = [r.model, _version(r.candidate)]
        info.add_metric([*labels, str(r.id), _version(r.baseline)], 1)
        for p in Phase:
            phase.add_metric([*labels, p.value], 1 if p.value == r.phase else 0)
        active.add_metric(labels, 1 if r.active else 0)
        step.add_metric(labels, max(r.step + 1, 0))
        steps.add_metric(labels, r.steps)
        weight.add_metric(labels, r.weight / 100)
        failures.add_metric(labels, r.failures)
        for c in r.analysis:
            check = [*labels, c.name]
            if c.value is not None:
                value.add_metric(check, c.value)
            limit.add_metric(check, c.limit)
            p_value.add_metric(check, c.p_value)
            samples.add_metric([*check, "canary"], c.canary_n)
            samples.add_metric([*check, "baseline"], c.baseline_n)
            for v in Verdict:
                verdict.add_metric([*check, v.value], 1 if v.value == c.verdict else 0)
    finished = CounterMetricFamily(
        "reg_rollouts_finished", "Rollouts that ended, by model and outcome (succeeded, "
        "rolled_back, aborted), counted from the audit log.", labels=["model", "outcome"])
    for model in sorted({*snap.models, *(m for m, _ in snap.finished)}):
        for outcome in OUTCOMES:
            finished.add_metric([model, outcome], snap.finished.get((model, outcome), 0))
    reconcile = CounterMetricFamily(
        "reg_reconcile_events", "Events the reconciler recorded, by kind (reconcile.failed: "
        "a training run failed; reconcile.pass_failed: a whole pass failed; ...), counted "
        "from the audit log.", labels=["kind"])
    for kind in sorted({*RECONCILE_KINDS, *snap.reconcile}):
        reconcile.add_metric([kind], snap.reconcile.get(kind, 0))
    runs = GaugeMetricFamily(
        "reg_training_runs", "Training runs in the registry, by model and status.",
        labels=["model", "status"])
    for model in sorted({*snap.models, *(m for m, _ in snap.runs)}):
        for status in sorted({*(s.value for s in RunStatus),
                              *(s for m, s in snap.runs if m == model)}):
            runs.add_metric([model, status], snap.runs.get((model, status), 0))
    return [info, phase, active, step, steps, weight, failures, value, limit, p_value,
            samples, verdict, finished, reconcile, runs]


class OperatorMetrics(Collector):
    """The collector the gateway registers; a thread keeps its snapshot fresh."""

    def __init__(self, reader: RegistryReader | None, *,
                 refresh_s: float = DEFAULT_REFRESH_S) -> None:
        self.reader = reader
        self.refresh_s = refresh_s
        self.snapshot = OperatorSnapshot()
        self.errors = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Read the registry once and swap the snapshot in; False (and counted) on error."""
        if self.reader is None:
            return False
        try:
            self.snapshot = self.reader.read()
        except Exception as e:  # the previous snapshot stays; the next refresh retries
            self.errors += 1
            self.last_error = f"{type(e).__name__}: {e}"
            log.warning("operator metrics: reading the registry failed: %s", self.last_error)
            return False
        return True

    def start(self) -> None:
        if self.reader is None or self._thread is not None:
            return
        self._stop.clear()  # an app's lifespan may run again (tests reuse an app)
        self._thread = threading.Thread(target=self._run, name="reg-operator-metrics",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.refresh_s)

    def collect(self) -> Iterator[Metric]:
        if self.reader is None:
            return
        yield from operator_families(self.snapshot, self.errors)


def operator_families(snap: OperatorSnapshot, errors: int) -> list[Metric]:
    """Every family the collector exports: :func:`families` and its own freshness (pure)."""
    stamp = GaugeMetricFamily(
        "reg_operator_refresh_timestamp_seconds",
        "When the operator metrics (reg_rollout_*, reg_reconcile_*, reg_training_*) were "
        "last read from the registry (UNIX seconds; 0 before the first read).")
    stamp.add_metric([], snap.read_at)
    failed = CounterMetricFamily(
        "reg_operator_refresh_errors",
        "Reads of the registry for the operator metrics that failed (the previous values "
        "stay until a read succeeds).")
    failed.add_metric([], errors)
    return [*families(snap), stamp, failed]
