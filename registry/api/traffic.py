"""Traffic policies: validated against the model's stages and stored in one transaction."""

from __future__ import annotations

from sqlmodel import col, select

from registry import events as audit
from registry.api.unit import UnitOfWork
from registry.events import EventKind
from registry.settings import default_actor
from registry.tables import (
    Model,
    Stage,
    TrafficPolicy,
    TrafficPolicyPublic,
    Version,
)
from registry.traffic import put_policy, validate_policy
from registry.versions import (
    VersionStatus,
)


class TrafficApi(UnitOfWork):
    """Traffic policies: validated against the model's stages and stored in one transaction."""

    def set_traffic(
        self, model: str | None, weights: dict[str, int], shadow: dict[str, int] | None = None,
        *, actor: str | None = None, reason: str = "",
    ) -> TrafficPolicyPublic:
        """Store the model's traffic policy after validating it against its stages."""
        name = self.resolve_model(model)
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, name)
            stage_versions: dict[str, tuple[int, VersionStatus] | None] = {}
            for st, number, status in s.exec(
                select(Stage.name, Version.number, Version.status)
                .join(Version, col(Stage.version_id) == col(Version.id), isouter=True)
                .where(col(Stage.model_id) == m.id)
            ):
                stage_versions[st] = None if number is None else (number, VersionStatus(status))
            w, sh = validate_policy(weights, shadow, stage_versions)
            now = self.clock()
            row = put_policy(s, m.id or 0, w, sh, actor=actor, reason=reason, at=now)
            audit.record(s, kind=EventKind.traffic_set, at=now, actor=actor, model=name,
                         message=" ".join(f"{k}={v}" for k, v in w.items())
                         + (f" shadow {sh}" if sh else "") + (f" ({reason})" if reason else ""),
                         data={"weights": w, "shadow": sh, "revision": row.revision})
            s.flush()
            return TrafficPolicyPublic.model_validate(row, from_attributes=True,
                                                      update={"model": name})

    def get_traffic(self, model: str) -> TrafficPolicyPublic | None:
        """The stored policy, or None (the gateway then sends everything to production)."""
        with self._read() as s:
            row = s.exec(select(TrafficPolicy).join(
                Model, col(TrafficPolicy.model_id) == col(Model.id)).where(
                col(Model.name) == model)).first()
            return None if row is None else TrafficPolicyPublic.model_validate(
                row, from_attributes=True, update={"model": model})
