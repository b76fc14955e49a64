"""What serving reads: the deployed versions, their artifacts, and a cheap change marker."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from registry import events as audit
from registry.api.unit import UnitOfWork
from registry.errors import NotFound
from registry.tables import (
    Artifact,
    Model,
    Stage,
    Version,
    VersionPublic,
)
from registry.versions import (
    adapter_name,
)


@dataclass(frozen=True)
class Deployment:
    """A version that some stage points at: what the serving engine must load."""

    model: str
    version: int
    adapter_name: str
    stages: list[str]
    status: str
    artifact_digest: str
    manifest: dict[str, Any]
    base_model_path: str
    base_model: dict[str, str]
    adapter_rank: int | None
    method: str
    identity: dict[str, Any] = field(default_factory=dict)


class ServingApi(UnitOfWork):
    """What serving reads: the deployed versions, their artifacts, and a cheap change marker."""

    def deployments(self) -> list[Deployment]:
        """Every version some stage points at, with what an engine needs to load it."""
        with self._read() as s:
            rows = s.exec(
                select(Model.name, Stage.name, Version, Artifact)
                .join(Stage, col(Stage.model_id) == col(Model.id))
                .join(Version, col(Stage.version_id) == col(Version.id))
                .join(Artifact, col(Version.artifact_digest) == col(Artifact.digest))
                .order_by(col(Model.name), col(Version.number), col(Stage.name))
            )
            out: dict[tuple[str, int], Deployment] = {}
            for model, stage, v, art in rows:
                key = (model, v.number)
                if key in out:
                    out[key].stages.append(stage)
                    continue
                out[key] = Deployment(
                    model=model, version=v.number, adapter_name=adapter_name(model, v.number),
                    stages=[stage], status=v.status, artifact_digest=art.digest,
                    manifest=art.manifest, base_model_path=v.base_model_path,
                    base_model=dict(v.base_model), adapter_rank=v.adapter_rank, method=v.method,
                    identity=dict(art.manifest.get("identity") or {}),
                )
            return list(out.values())

    def fetch_artifact(self, version: VersionPublic, dest_root: Path) -> Path:
        """The version's artifact as a verified local directory ``dest_root/<digest hex>``."""
        if version.artifact_digest is None:
            raise NotFound(f"{version.ref} has no stored artifact (status {version.status})")
        return self.store.materialize(version.artifact_digest, dest_root)

    def change_marker(self) -> int:
        """Cheap: the newest audit event id. Poll it; reload when it moves."""
        with self._read() as s:
            return audit.change_marker(s)
