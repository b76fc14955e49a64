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

from rollout.traffic import Shadow, TrafficPolicy


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
            out.append(
                Deployment(
                    model=_get(d, "model"),
                    version=int(_get(d, "version")),
                    stages=tuple(sorted(_get(d, "stages"))),
                    digest=_get(d, "digest", "artifact_digest"),
                    base_model_path=str(_get(d, "base_model_path")),
                    adapter_rank=int(_get(d, "adapter_rank") or 8),
                    max_model_len=int(_get(d, "max_model_len", default=512) or 512),
                )
            )
        return out

    def traffic(self, model: str) -> TrafficPolicy | None:
        p = self.registry.get_traffic(model)
        if p is None:
            return None
        weights = {str(k): int(v) for k, v in _get(p, "weights").items()}
        shadow_raw = _get(p, "shadow", default=None)
        shadow: Shadow | None = None
        if shadow_raw:
            if isinstance(shadow_raw, Mapping):
                (stage, pct), = shadow_raw.items()
                shadow = Shadow(str(stage), int(pct))
            else:
                shadow = Shadow(_get(shadow_raw, "stage"), int(_get(shadow_raw, "percent")))
        return TrafficPolicy(model=model, weights=weights, shadow=shadow)

    def change_marker(self) -> int:
        return int(self.registry.change_marker())

    def fetch_artifact(self, deployment: Deployment, dest_root: Path) -> Path:
        path: Path = self.registry.fetch_artifact_for(
            deployment.model, deployment.version, dest_root
        )
        return Path(path)

    def known_models(self) -> Mapping[str, list[int]]:
        return dict(self.registry.ready_versions())

    def set_traffic(
        self, model: str, weights: Mapping[str, int], shadow: Shadow | None, actor: str,
        reason: str,
    ) -> None:
        self.registry.set_traffic(
            model, dict(weights), None if shadow is None else {shadow.stage: shadow.percent},
            actor=actor, reason=reason,
        )


_MISSING = object()


def _get(obj: Any, *names: str, default: Any = _MISSING) -> Any:
    """Read a field from a dataclass/SQLModel/dict: the registry's item types are its own."""
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    if default is _MISSING:
        raise AttributeError(f"registry item {obj!r} has none of {names}")
    return default
