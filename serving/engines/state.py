"""What the supervisor publishes and the gateway reads: immutable snapshots, swapped whole.

The supervisor replaces ``catalogue`` and ``engines`` with new values; a request
reads each once, so it never sees half an update. Everything runs on one event
loop, so plain attributes need no lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from serving.engines.process import EngineState
from serving.gateway.routing import Catalogue


@dataclass(frozen=True)
class EngineStatus:
    key: str  # base model path
    url: str
    state: EngineState
    reason: str = ""
    pid: int | None = None
    adapters: frozenset[str] = frozenset()
    restarts: int = 0

    @property
    def ready(self) -> bool:
        return self.state is EngineState.ready


@dataclass
class GatewayState:
    catalogue: Catalogue = field(default_factory=Catalogue)
    engines: Mapping[str, EngineStatus] = field(default_factory=dict)
    # Set once the first registry read succeeded; /ready stays 503 before.
    loaded_once: bool = False
    last_error: str = ""
    in_flight: int = 0
    shadow_in_flight: int = 0

    def engine_unavailable_reason(self, key: str) -> str | None:
        """None if the engine for ``key`` can take requests, else why not (for a 503)."""
        status = self.engines.get(key)
        if status is None:
            return (
                "no engine is running for this model's base model yet; "
                f"the supervisor starts one within a second ({key})"
            )
        if status.ready:
            return None
        return status.reason or f"engine for {key} is {status.state.value}"
