"""What the supervisor reports, and to whom: immutable values handed to an :class:`Observer`.

The supervisor knows no gateway: it reports each registry read (:class:`Deployed`) and
its engines' status (:class:`EngineStatus`) to an observer, which the gateway supplies
(:class:`serving.gateway.state.StatePublisher` turns them into the routing snapshot and
metrics). Values are frozen and replaced whole, so a reader never sees half an update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from registry.deployments import Deployment
from registry.traffic import TrafficPolicy
from serving.engines.process import EngineState


@dataclass(frozen=True)
class EngineStatus:
    key: str  # the replica's key: the base model path for replica 0, else BASE#i
    url: str
    state: EngineState
    reason: str = ""
    pid: int | None = None
    adapters: frozenset[str] = frozenset()
    restarts: int = 0
    # Which launch of the engine this is (1 = the first); a restart bumps it, so checks of
    # what the engine serves (the rollout's identity probes) are made again.
    generation: int = 0
    name: str = ""  # the served model name (the engine's metric label)
    max_model_len: int = 0
    max_loras: int = 0  # adapter slots (vLLM's --max-loras)
    # Why a flag is what it is when the deployed versions asked for different values.
    notes: tuple[str, ...] = ()
    base: str = ""  # the base model path (the routing target's ``engine``)
    replica: int = 0

    def __post_init__(self) -> None:
        if not self.base:
            object.__setattr__(self, "base", self.key)

    @property
    def label(self) -> str:
        """The metric label: the served name, and ``#i`` for replicas after the first."""
        return self.name if self.replica == 0 else f"{self.name}#{self.replica}"

    @property
    def ready(self) -> bool:
        return self.state is EngineState.ready


@dataclass(frozen=True)
class Deployed:
    """One read of the registry: what is deployed, each model's policy, every known version."""

    deployments: Sequence[Deployment] = ()
    policies: Mapping[str, TrafficPolicy | None] = field(default_factory=dict)
    known: Mapping[str, Sequence[int]] = field(default_factory=dict)
    marker: int = -1


class Observer(Protocol):
    """Where the supervisor reports. Called on the event loop; must not block."""

    def deployed(self, read: Deployed) -> None:
        """Routing may follow this read now: the adapters it names are loaded."""

    def engines(self, statuses: Mapping[str, EngineStatus]) -> None:
        """Every engine's status, by base model path (replaces the previous one)."""

    def engine_restarted(self, name: str) -> None:
        """The engine serving ``name`` is being restarted after it went down."""

    def error(self, message: str) -> None:
        """A pass failed (the next one retries), or an adapter could not be synced."""

    def degraded(self, deployments: Mapping[tuple[str, int], str]) -> None:
        """Deployed versions that cannot be served now, (model, version) -> why; replaces
        the previous mapping (empty: every deployed version is servable)."""
