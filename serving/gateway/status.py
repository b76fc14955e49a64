"""``GET /api/status``: what operators see, as one JSON document (:class:`GatewayStatus`).

Read-only. With API keys configured (``REG_API_KEYS``) it needs one, as ``/v1/models``
does; it shows no token, key or secret. The status page at ``/`` and ``reg status`` read
it. It holds two parts:

1. ``registry``: :meth:`registry.api.Registry.overview` (stages, versions, traffic,
   rollouts with their analysis, reconcile, runs, audit tail), read in a thread and kept
   for :data:`OVERVIEW_TTL_S`, so any number of viewers cost one read a second. Without
   a registry (a gateway built over a bare ``DeploymentSource``) it is null and
   ``registry_note`` says so;
2. ``gateway``: what this process knows live: per-version counters (the same numbers
   ``/metrics`` exports), engines and their adapter slots, degraded deployments (a
   version deployed but not servable, with the supervisor's reason) and a short time
   series per version for charts.

The time series: :class:`StatusHost` samples the gateway's routed counters (by the
version routing chose, as the canary analysis counts) every ``sample_interval_s`` into
bounded ring buffers (:data:`HISTORY_S` of history); the points and each version's recent
window (the last :data:`RECENT_S`) are computed by :mod:`serving.gateway.status_series`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from recipes.core.names import adapter_name
from registry.api.overview import Overview, RolloutOverview
from serving.config import ServeConfig
from serving.gateway import openapi
from serving.gateway.metrics import Metrics
from serving.gateway.state import GatewayState
from serving.gateway.status_series import (
    Point,
    RecentWindow,
    Sample,
    Series,
    point_between,
    series_of,
    take_sample,
    window_of,
)

OVERVIEW_TTL_S = 1.0  # a registry read serves every viewer for this long
SAMPLE_INTERVAL_S = 5.0
HISTORY_S = 600.0  # the time series covers the last ten minutes
RECENT_S = 300.0  # the window of each version's recent rate, errors and latency

OverviewReader = Callable[[], Overview]


# ---- the document ---------------------------------------------------------------------


class StageCounters(BaseModel):
    """Counters of answered requests since the gateway started, by the version that
    served them: ``reg_gateway_requests_total`` and its siblings on ``/metrics``."""

    requests: dict[str, int] = Field(default_factory=dict)  # HTTP status code -> requests
    total: int = 0
    errors: int = 0  # 5xx answers
    in_flight: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0


class VersionLive(BaseModel):
    model: str
    version: int
    adapter_name: str
    totals: StageCounters  # summed over the stages it served under
    stages: dict[str, StageCounters] = Field(default_factory=dict)
    recent: RecentWindow | None = None


class EngineHealth(BaseModel):
    key: str  # the base model's path
    name: str  # the served model name (the engine's metric label)
    state: str  # starting, ready, down, stopped
    ready: bool
    reason: str = ""
    pid: int | None = None
    restarts: int = 0
    generation: int = 0
    adapters: list[str] = Field(default_factory=list)
    adapter_slots: int = 0  # vLLM's --max-loras
    max_model_len: int = 0
    notes: list[str] = Field(default_factory=list)


class DegradedDeployment(BaseModel):
    """A version a stage points at that this gateway cannot serve now, and why."""

    model: str
    version: int
    stages: list[str] = Field(default_factory=list)
    reason: str


class RoutedModel(BaseModel):
    """What this gateway routes a model by now (its last registry read)."""

    weights: dict[str, int]
    shadow: dict[str, int] = Field(default_factory=dict)
    default: bool = False
    stages: dict[str, int] = Field(default_factory=dict)  # stage -> version


class GatewayLive(BaseModel):
    started_at: datetime
    ready: bool
    in_flight: int
    max_concurrency: int
    marker: int  # the registry change marker routing was built from (-1: none yet)
    last_error: str = ""  # the supervisor's last failed pass or adapter sync
    engines: list[EngineHealth] = Field(default_factory=list)
    degraded: list[DegradedDeployment] = Field(default_factory=list)
    routing: dict[str, RoutedModel] = Field(default_factory=dict)
    versions: list[VersionLive] = Field(default_factory=list)
    rejected: dict[str, int] = Field(default_factory=dict)  # "reason code" -> requests
    series: Series


class GatewayStatus(BaseModel):
    """The whole of ``GET /api/status`` (and of ``reg status --json``)."""

    generated_at: datetime
    registry: Overview | None = None
    registry_note: str = ""  # why ``registry`` is null, when it is
    # The current step's verdict of each active rollout (rollout.canary.analysis.StepVerdict:
    # passed, failed, waiting, inconclusive), from its stored analysis values.
    verdicts: dict[str, str] = Field(default_factory=dict)
    gateway: GatewayLive | None = None
    gateway_note: str = ""  # why ``gateway`` is null (reg status: not reachable)


def step_verdict_of(rollout: RolloutOverview, now: datetime) -> str | None:
    """The current step's verdict of an active rollout from its stored checks, as the
    controller judges it (:func:`rollout.canary.analysis.step_verdict`); None if ended."""
    from pydantic import ValidationError

    from recipes.schema import RolloutSpec
    from rollout.canary.analysis import CheckResult, Verdict, step_verdict

    if not rollout.active:
        return None
    try:
        spec = RolloutSpec.model_validate(rollout.plan)
        checks = [CheckResult(c.name, Verdict(c.verdict), c.value, c.limit or 0.0, c.canary_n,
                              c.baseline_n, 1.0 if c.p_value is None else c.p_value, c.detail)
                  for c in rollout.analysis]
    except (ValidationError, ValueError):  # stored by another reg: no verdict to give
        return None
    seconds = (now - rollout.step_started_at).total_seconds()
    return step_verdict(checks, seconds, spec).value


def verdicts_of(overview: Overview | None, now: datetime) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in [] if overview is None else overview.models:
        verdict = None if m.rollout is None else step_verdict_of(m.rollout, now)
        if verdict is not None:
            out[m.name] = verdict
    return out


def _counter_values(family: Iterable[Any], suffix: str) -> Iterable[tuple[dict[str, str],
                                                                         float]]:
    """(labels, value) of a prometheus_client metric's samples named ``*suffix``."""
    for metric in family:
        for s in metric.samples:
            if s.name.endswith(suffix):
                yield s.labels, s.value


def version_counters(metrics: Metrics) -> dict[tuple[str, int], dict[str, StageCounters]]:
    """The served counters on ``/metrics``, by (model, version), then stage."""
    out: dict[tuple[str, int], dict[str, StageCounters]] = {}

    def at(labels: Mapping[str, str]) -> StageCounters | None:
        v = labels.get("version", "")
        if not v.startswith("v") or not v[1:].isdigit():
            return None
        stages = out.setdefault((labels["model"], int(v[1:])), {})
        return stages.setdefault(labels["stage"], StageCounters())

    for labels, value in _counter_values(metrics.requests.collect(), "_total"):
        c = at(labels)
        if c is not None:
            c.requests[labels["code"]] = int(value)
            c.total += int(value)
            if labels["code"].isdigit() and int(labels["code"]) >= 500:
                c.errors += int(value)
    for labels, value in _counter_values(metrics.in_flight.collect(), "_requests"):
        c = at(labels)
        if c is not None:
            c.in_flight = int(value)
    for field, family in (("prompt_tokens", metrics.prompt_tokens),
                          ("output_tokens", metrics.output_tokens)):
        for labels, value in _counter_values(family.collect(), "_total"):
            c = at(labels)
            if c is not None:
                setattr(c, field, int(value))
    return out


def _summed(stages: Mapping[str, StageCounters]) -> StageCounters:
    codes: collections.Counter[str] = collections.Counter()
    for c in stages.values():
        codes.update(c.requests)
    cs = stages.values()
    return StageCounters(requests=dict(codes), total=sum(c.total for c in cs),
                         errors=sum(c.errors for c in cs),
                         in_flight=sum(c.in_flight for c in cs),
                         prompt_tokens=sum(c.prompt_tokens for c in cs),
                         output_tokens=sum(c.output_tokens for c in cs))


# ---- I/O: the host and the route -----------------------------------------------------------


class StatusContext(Protocol):
    """What the status document reads of the gateway."""

    @property
    def state(self) -> GatewayState: ...

    @property
    def config(self) -> ServeConfig: ...

    @property
    def metrics(self) -> Metrics: ...


class StatusHost:
    """Samples the routed counters into a ring buffer and builds :class:`GatewayStatus`.

    ``start()``/``stop()`` run the sampler on the app's event loop (the lifespan calls
    them); :meth:`status` may be awaited by any number of requests at once.
    """

    def __init__(self, gw: StatusContext, overview: OverviewReader | None, *,
                 sample_interval_s: float = SAMPLE_INTERVAL_S,
                 history_s: float = HISTORY_S, clock: Callable[[], float] = time.time) -> None:
        self.gw = gw
        self.overview = overview
        self.interval = sample_interval_s
        self.clock = clock
        size = max(2, round(history_s / sample_interval_s) + 1)
        self.samples: collections.deque[Sample] = collections.deque(maxlen=size)
        self.points: collections.deque[Point] = collections.deque(maxlen=size - 1)
        self.started_at = datetime.fromtimestamp(clock(), UTC)
        self._cached: tuple[float, Overview | None, str] | None = None
        self._series_of: tuple[Point | None, Series] | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> Sample:
        """Take a sample now (the sampler's step; tests call it to step time)."""
        s = take_sample(self.gw.metrics.routed, self.clock())
        if self.samples:
            point = point_between(self.samples[-1], s)
            if point is not None:
                self.points.append(point)
        self.samples.append(s)
        return s

    def start(self) -> None:
        self.sample()
        self._task = asyncio.create_task(self._run(), name="reg-status-sampler")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.sample()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def registry_part(self) -> tuple[Overview | None, str]:
        """The overview, read at most once per OVERVIEW_TTL_S however many ask."""
        if self.overview is None:
            return None, ("this gateway was started without a registry: only its live "
                          "part is shown")
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < OVERVIEW_TTL_S:
            return cached[1], cached[2]
        async with self._lock:  # the first viewer reads; the others wait for its answer
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < OVERVIEW_TTL_S:
                return cached[1], cached[2]
            try:
                ov: Overview | None = await asyncio.to_thread(self.overview)
                note = ""
            except Exception as e:  # shown, not raised: the live part is still worth seeing
                ov, note = None, f"the registry could not be read: {type(e).__name__}: {e}"
            self._cached = (time.monotonic(), ov, note)
            return ov, note

    def live(self) -> GatewayLive:
        st, metrics = self.gw.state, self.gw.metrics
        now = take_sample(metrics.routed, self.clock())
        recent = window_of(list(self.samples), now, RECENT_S)
        counters = version_counters(metrics)
        keys = sorted(set(counters) | set(recent))
        versions = [VersionLive(
            model=m, version=v, adapter_name=adapter_name(m, v),
            totals=_summed(counters.get((m, v), {})), stages=counters.get((m, v), {}),
            recent=recent.get((m, v))) for m, v in keys]
        cat = st.catalogue
        degraded = [DegradedDeployment(
            model=m, version=v, reason=why,
            stages=sorted(s for s, d in cat.models[m].stages.items() if d.version == v)
            if m in cat.models else [])
            for (m, v), why in sorted(st.degraded.items())]
        engines = [EngineHealth(
            key=e.key, name=e.name, state=e.state.value, ready=e.ready, reason=e.reason,
            pid=e.pid, restarts=e.restarts, generation=e.generation,
            adapters=sorted(e.adapters), adapter_slots=e.max_loras,
            max_model_len=e.max_model_len, notes=list(e.notes))
            for e in sorted(st.engines.values(), key=lambda e: e.key)]
        routing = {name: RoutedModel(
            weights=dict(view.policy.weights), default=view.policy_is_default,
            shadow={} if view.policy.shadow is None else {
                view.policy.shadow.stage: view.policy.shadow.percent},
            stages={s: d.version for s, d in sorted(view.stages.items())})
            for name, view in sorted(cat.models.items())}
        rejected = {f"{labels['reason']} {labels['code']}": int(value) for labels, value
                    in _counter_values(metrics.rejected.collect(), "_total")}
        ready = st.loaded_once and all(e.ready for e in st.engines.values())
        return GatewayLive(
            started_at=self.started_at, ready=ready, in_flight=st.in_flight,
            max_concurrency=self.gw.config.max_concurrency, marker=cat.marker,
            last_error=st.last_error, engines=engines, degraded=degraded, routing=routing,
            versions=versions, rejected=rejected,
            series=self._series())

    def _series(self) -> Series:
        """The series, rebuilt only when a sample added a point (not per viewer)."""
        last = self.points[-1] if self.points else None
        if self._series_of is None or self._series_of[0] is not last:
            self._series_of = (last, series_of(list(self.points), self.interval))
        return self._series_of[1]

    async def status(self) -> GatewayStatus:
        ov, note = await self.registry_part()
        generated = datetime.fromtimestamp(self.clock(), UTC)
        return GatewayStatus(generated_at=generated, registry=ov, registry_note=note,
                             verdicts=verdicts_of(ov, generated), gateway=self.live())


def status_router(host: StatusHost,
                  check_key: Callable[[Request], Response | None]) -> APIRouter:
    """``GET /api/status``; ``check_key`` answers the 401 when API keys are required."""
    router = APIRouter(tags=["status"])

    @router.get("/api/status", response_model=GatewayStatus, openapi_extra=openapi.status())
    async def api_status(request: Request) -> Response:
        """Registry overview and this gateway's live state, for the status page and
        `reg status` (read-only; needs an API key when REG_API_KEYS is set)."""
        denied = check_key(request)
        if denied is not None:
            return denied
        doc = await host.status()
        return JSONResponse(doc.model_dump(mode="json"),
                            headers={"cache-control": "no-store"})

    return router
