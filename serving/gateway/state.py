"""The gateway's shared state: the routing snapshot and engine status every request reads.

The supervisor reports to :class:`StatePublisher`, which builds a new
:class:`~serving.gateway.routing.Catalogue` from each registry read, replaces the
engines' status and keeps the traffic and engine gauges current. Values are replaced
whole, so a request that reads each once never sees half an update; everything runs
on one event loop, so plain attributes need no lock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from registry.deployments import Deployment
from serving.engines.load import EngineLoad
from serving.engines.state import Deployed, EngineStatus
from serving.gateway.metrics import Metrics
from serving.gateway.picker import ReplicaView
from serving.gateway.routing import Catalogue, build_catalogue


@dataclass
class GatewayState:
    catalogue: Catalogue = field(default_factory=Catalogue)
    engines: Mapping[str, EngineStatus] = field(default_factory=dict)
    # Set once the first registry read succeeded; /ready stays 503 before.
    loaded_once: bool = False
    last_error: str = ""
    in_flight: int = 0
    shadow_in_flight: int = 0
    # Versions a rollback is taking traffic from (model, version) -> until when (monotonic):
    # routing sends their weighted share to production until a registry read says they
    # have none (or the time passes: the rollback was not committed after all).
    drained: Mapping[tuple[str, int], float] = field(default_factory=dict)
    # Deployed versions that cannot be served (their adapter failed to fetch or load; the
    # supervisor retries with a backoff): (model, version) -> the reason. Their requests
    # fail over to production, or get a 503 with the reason; /ready does not depend on it.
    degraded: Mapping[tuple[str, int], str] = field(default_factory=dict)
    # Each replica's last scraped load (the LoadScraper's dict, by replica key), and the
    # requests this gateway has open on each (known at once; the scrape lags).
    loads: Mapping[str, EngineLoad] = field(default_factory=dict)
    replica_in_flight: dict[str, int] = field(default_factory=dict)
    # Requests per adapter on bases with several replicas, and those that spilled past
    # its queued holders: running counts the supervisor places adapters by.
    adapter_requests: dict[str, int] = field(default_factory=dict)
    adapter_spills: dict[str, int] = field(default_factory=dict)

    def drain(self, model: str, version: int, seconds: float = 30.0) -> None:
        """Route no weighted traffic to ``version`` from now on (called from any thread)."""
        self.drained = {**self.drained, (model, version): time.monotonic() + seconds}

    def replica_views(self, base: str) -> list[ReplicaView]:
        """What the picker needs of each replica of ``base``'s engine."""
        return [ReplicaView(key=s.key, ready=s.ready, adapters=s.adapters, slots=s.max_loras,
                            load=self.loads.get(s.key),
                            in_flight=self.replica_in_flight.get(s.key, 0))
                for s in self.engines.values() if s.base == base]

    def scraped_replicas(self) -> dict[str, str]:
        """Replica key -> URL of the ready replicas whose load matters: those of a base
        with more than one replica (with one there is nothing to choose, so its engine
        is spared the scrapes)."""
        bases = Counter(s.base for s in self.engines.values())
        return {k: s.url for k, s in self.engines.items() if s.ready and bases[s.base] > 1}

    def engine_unavailable_reason(self, key: str) -> str | None:
        """None if the engine for ``key`` can take requests, else why not (for a 503)."""
        if any(s.ready for s in self.engines.values() if s.base == key):
            return None
        status = self.engines.get(key)
        if status is None:
            return (
                "no engine is running for this model's base model yet; "
                f"the supervisor starts one within a second ({key})"
            )
        if status.ready:
            return None
        return status.reason or f"engine for {key} is {status.state.value}"


class StatePublisher:
    """The supervisor's :class:`~serving.engines.state.Observer`: state and gauges follow."""

    def __init__(self, state: GatewayState, metrics: Metrics) -> None:
        self.state = state
        self.metrics = metrics
        self._deployments: tuple[Deployment, ...] = ()

    def deployed(self, read: Deployed) -> None:
        cat = build_catalogue(read.deployments, read.policies, read.known, read.marker)
        self.state.catalogue = cat
        self.state.loaded_once = True
        if self.state.drained:
            now = time.monotonic()
            self.state.drained = {k: until for k, until in self.state.drained.items()
                                  if until > now and _weighted(cat, *k)}
        weights: list[tuple[str, str, str, float]] = []
        shadows: list[tuple[str, str, str, float]] = []
        for name, view in cat.models.items():
            for stage, w in view.policy.weights.items():
                d = view.stages.get(stage)
                if d is not None:
                    weights.append((name, f"v{d.version}", stage, w / 100))
            s = view.policy.shadow
            if s is not None and s.stage in view.stages:
                shadows.append((name, f"v{view.stages[s.stage].version}", s.stage,
                                s.percent / 100))
        self.metrics.set_traffic(weights, shadows)
        self.metrics.policy_marker.set(cat.marker)
        self._deployments = tuple(read.deployments)
        self._set_servable()

    def engines(self, statuses: Mapping[str, EngineStatus]) -> None:
        self.state.engines = statuses
        self.metrics.set_engines({s.label: s.ready for s in statuses.values()},
                                 {s.label: len(s.adapters) for s in statuses.values()},
                                 {s.label: s.max_loras for s in statuses.values()})

    def loads_scraped(self) -> None:
        """After each scrape round: the per-replica load gauges follow."""
        now = time.monotonic()
        rows = []
        for key, status in self.state.engines.items():
            load = self.state.loads.get(key)
            if load is None:
                continue
            rows.append((status.label, load.waiting, load.running, now - load.at,
                         self.state.replica_in_flight.get(key, 0)))
        self.metrics.set_replica_loads(rows)

    def engine_restarted(self, name: str) -> None:
        self.metrics.engine_restarts.labels(name).inc()

    def error(self, message: str) -> None:
        self.state.last_error = message

    def degraded(self, deployments: Mapping[tuple[str, int], str]) -> None:
        self.state.degraded = dict(deployments)
        self._set_servable()

    def _set_servable(self) -> None:
        bad = self.state.degraded
        self.metrics.set_servable([
            (d.model, f"v{d.version}", stage, (d.model, d.version) not in bad)
            for d in self._deployments for stage in d.stages])


def _weighted(cat: Catalogue, model: str, version: int) -> bool:
    """Whether the model's policy still gives ``version`` a share of its traffic."""
    view = cat.models.get(model)
    if view is None:
        return False
    return any(w > 0 and stage in view.stages and view.stages[stage].version == version
               for stage, w in view.policy.weights.items())
