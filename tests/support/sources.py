"""In-memory implementations of serving's registry Protocols, for tests that need no database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from registry.deployments import Deployment
from registry.traffic import TrafficPolicy


@dataclass
class InMemorySource:
    """A ``serving.source.DeploymentSource`` over fixed deployments and policies.

    ``artifacts`` maps an adapter name to a folder ``fetch_artifact`` hands back; a
    deployment without one cannot be fetched (its adapter sync then reports the error).
    """

    deps: list[Deployment]
    policies: Mapping[str, TrafficPolicy | None] = field(default_factory=dict)
    artifacts: Mapping[str, Path] = field(default_factory=dict)
    marker: int = 1

    def deployments(self) -> list[Deployment]:
        return list(self.deps)

    def traffic(self, model: str) -> TrafficPolicy | None:
        return self.policies.get(model)

    def change_marker(self) -> int:
        return self.marker

    def fetch_artifact(self, deployment: Deployment, dest_root: Path) -> Path:
        path = self.artifacts.get(deployment.adapter_name)
        if path is None:
            raise FileNotFoundError(f"no artifact for {deployment.adapter_name} in this test")
        return path

    def known_models(self) -> Mapping[str, list[int]]:
        known: dict[str, list[int]] = {}
        for d in self.deps:
            known.setdefault(d.model, []).append(d.version)
        return {m: sorted(v) for m, v in known.items()}
