"""What serving reads from the registry, behind a small Protocol.

The gateway and the engine manager need only: which versions are deployed (and
where their base model lives), each model's traffic policy, a cheap marker that
changes whenever either changes, and a way to fetch a version's adapter files,
digest-verified. :class:`RegistrySource` adapts ``registry.api.Registry`` to this,
handing on the registry's own :class:`~registry.deployments.Deployment` and
:class:`~registry.traffic.TrafficPolicy` values; tests of the pure parts build
those values directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from registry.deployments import VLLM, Deployment
from registry.traffic import Shadow, TrafficPolicy

if TYPE_CHECKING:
    from registry.api import Registry


class DeploymentSource(Protocol):
    """The registry as serving sees it. Calls may block (database): run them in a thread."""

    def deployments(self) -> list[Deployment]: ...

    def traffic(self, model: str) -> TrafficPolicy | None: ...

    def change_marker(self) -> int: ...

    def fetch_artifact(self, deployment: Deployment, dest_root: Path) -> Path: ...

    def known_models(self) -> Mapping[str, list[int]]:
        """Every model with its ready version numbers (deployed or not), for 404 messages."""
        ...


class ChangeFeed(Protocol):
    """Wakes a reader when the registry commits a change (PostgreSQL's LISTEN/NOTIFY:
    :class:`registry.changes.PostgresChangeFeed`). Blocking: call it in a thread."""

    def wait(self, timeout_s: float) -> bool:
        """True once a change may have committed; False after ``timeout_s`` of quiet."""
        ...

    def close(self) -> None: ...


class PolicyWriter(Protocol):
    """Where admin routes record a change: validated and audited by the registry.

    ``set_traffic`` raises ``registry.traffic.InvalidTraffic`` (listing every fault) for
    a bad policy; ``audit`` raises ``registry.errors.NotFound`` for an unknown version.
    """

    def set_traffic(
        self, model: str, weights: Mapping[str, int], shadow: Shadow | None, actor: str,
        reason: str,
    ) -> TrafficPolicy: ...

    def audit(self, kind: str, *, model: str, version: int, actor: str, message: str,
              data: Mapping[str, Any]) -> None:
        """Record an event about an existing version (e.g. a fault injected into it)."""
        ...


class RegistrySource:
    """:class:`DeploymentSource` and :class:`PolicyWriter` over ``registry.api.Registry``."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def deployments(self) -> list[Deployment]:
        # A version whose recipe says deploy.target: none is recorded, not served.
        return [d for d in self.registry.deployments() if d.target == VLLM]

    def traffic(self, model: str) -> TrafficPolicy | None:
        return self.registry.get_traffic(model)

    def change_marker(self) -> int:
        return self.registry.change_marker()

    def fetch_artifact(self, deployment: Deployment, dest_root: Path) -> Path:
        version = self.registry.get_version(deployment.model, deployment.version)
        return self.registry.fetch_artifact(version, dest_root)

    def known_models(self) -> Mapping[str, list[int]]:
        # Version numbers are 1..latest per model, so the listing needs no per-version query.
        return {m.name: list(range(1, (m.latest or 0) + 1))
                for m in self.registry.list_models()}

    def set_traffic(
        self, model: str, weights: Mapping[str, int], shadow: Shadow | None, actor: str,
        reason: str,
    ) -> TrafficPolicy:
        return self.registry.set_traffic(model, weights, shadow, actor=actor, reason=reason)

    def audit(self, kind: str, *, model: str, version: int, actor: str, message: str,
              data: Mapping[str, Any]) -> None:
        v = self.registry.get_version(model, version)  # NotFound names what exists
        self.registry.record_event(kind, actor=actor, model=v.model, version=v.number,
                                   message=message, data=dict(data))
