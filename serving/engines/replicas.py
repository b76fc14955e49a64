"""Replicas of one base model's engine: their keys, and the slots the supervisor keeps.

A base model is served by ``ServeConfig.replicas`` local engines (``reg serve
--replicas N``), or by the external engines listed for it (``REG_EXTERNAL_ENGINES``, one
item per engine, a base named again for each more replica). Replica 0's key is the base
model path itself, so everything keyed by base (routing targets, admin routes, metrics
of a single engine) reads the same as with one engine; replica ``i > 0`` is
``BASE#i``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from serving.engines.process import EngineProcess, EngineSpec, EngineState

_SEP = "#"


def replica_key(base: str, index: int) -> str:
    return base if index == 0 else f"{base}{_SEP}{index}"


def replica_index(key: str, base: str) -> int:
    return 0 if key == base else int(key[len(base) + len(_SEP):])


def replica_specs(
    by_base: Mapping[str, EngineSpec], replicas: int,
    external: Mapping[str, Sequence[str]],
) -> dict[str, tuple[str, EngineSpec, str | None]]:
    """Replica key -> (base, spec, external URL or None), for every base (pure)."""
    out: dict[str, tuple[str, EngineSpec, str | None]] = {}
    for base, spec in by_base.items():
        urls: Sequence[str | None] = external.get(base) or [None] * replicas
        for i, url in enumerate(urls):
            out[replica_key(base, i)] = (base, spec, url)
    return out


@dataclass
class EngineSlot:
    """The supervisor's record of one engine replica (mutable; only the supervisor
    touches it)."""

    key: str
    spec: EngineSpec
    proc: EngineProcess | None  # None for an external engine
    url: str
    base: str = ""  # the base model path (several slots share it: replicas)
    external: bool = False
    state: EngineState = EngineState.starting
    reason: str = ""
    attempts: int = 0
    restarts: int = 0
    # Bumped at every launch (start, restart, a new external process): what an engine
    # answered before says nothing about what this process serves.
    generation: int = 0
    next_start_at: float = 0.0
    health_failures: int = 0
    last_health_at: float = 0.0
    needs_sync: bool = True
    adapters: set[str] = field(default_factory=set)
    # Adapters this engine served before it went down or restarted: each is served again
    # only once its identity probes match on the new process.
    reverify: set[str] = field(default_factory=set)
    manual: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = self.base or self.key
