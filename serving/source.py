"""What serving reads from the registry, behind a small Protocol.

The gateway and the engine manager need only: which versions are deployed (and
where their base model lives), each model's traffic policy, a cheap marker that
changes whenever either changes, and a way to fetch a version's adapter files,
digest-verified. :class:`RegistrySource` adapts :class:`registry.api.Registry`
to this; tests of the pure parts build :class:`Deployment` values directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rollout.policy import Shadow, TrafficPolicy


@dataclass(frozen=True)
class Deployment:
    """One version that some stage points at, so its adapter must be loaded."""

    model: str
    version: int
    stages: tuple[str, ...]
    digest: str
    base_model_path: str
    adapter_rank: int
    max_model_len: int = 512

    @property
    def adapter_name(self) -> str:
        """The engine's name for this version: never reused, so no cache serves stale weights."""
        return adapter_name(self.model, self.version)


def adapter_name(model: str, version: int) -> str:
    return f"{model}@v{version}"


class DeploymentSource(Protocol):
    """The registry as serving sees it. Calls may block (database): run them in a thread."""

    def deployments(self) -> list[Deployment]: ...

    def traffic(self, model: str) -> TrafficPolicy | None: ...

    def change_marker(self) -> int: ...

    def fetch_artifact(self, deployment: Deployment, dest_root: Path) -> Path: ...

    def known_models(self) -> Mapping[str, list[int]]:
        """Every model with its ready version numbers (deployed or not), for 404 messages."""
        ...


class PolicyWriter(Protocol):
    """Where admin routes and `reg traffic` record a policy change (an audited event)."""

    def set_traffic(
        self, model: str, weights: Mapping[str, int], shadow: Shadow | None, actor: str,
        reason: str,
    ) -> None: ...


class RegistrySource:
    """:class:`DeploymentSource` and :class:`PolicyWriter` over ``registry.api.Registry``."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def deployments(self) -> list[Deployment]:
        out: list[Deployment] = []
        for d in self.registry.deployments():
            ident = d.identity or {}
            out.append(
                Deployment(
                    model=d.model,
                    version=int(d.version),
                    stages=tuple(sorted(d.stages)),
                    digest=d.artifact_digest,
                    base_model_path=str(d.base_model_path),
                    adapter_rank=int(d.adapter_rank or 8),
                    max_model_len=int(ident.get("max_model_len") or 512),
                )
            )
        return out

    def traffic(self, model: str) -> TrafficPolicy | None:
        p = self.registry.get_traffic(model)
        if p is None:
            return None
        weights = {str(k): int(v) for k, v in p.weights.items()}
        shadow = None
        if p.shadow:
            stage, pct = next(iter(sorted(p.shadow.items())))
            shadow = Shadow(str(stage), int(pct))
        return TrafficPolicy(model=model, weights=weights, shadow=shadow)

    def change_marker(self) -> int:
        return int(self.registry.change_marker())

    def fetch_artifact(self, deployment: Deployment, dest_root: Path) -> Path:
        version = self.registry.get_version(deployment.model, deployment.version)
        return Path(self.registry.fetch_artifact(version, dest_root))

    def known_models(self) -> Mapping[str, list[int]]:
        # Version numbers are 1..latest per model, so the listing needs no per-version query.
        return {m.name: list(range(1, (m.latest or 0) + 1))
                for m in self.registry.list_models()}

    def set_traffic(
        self, model: str, weights: Mapping[str, int], shadow: Shadow | None, actor: str,
        reason: str,
    ) -> None:
        self.registry.set_traffic(
            model, dict(weights), None if shadow is None else {shadow.stage: shadow.percent},
            actor=actor, reason=reason,
        )


