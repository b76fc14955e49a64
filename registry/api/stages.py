"""Stages: promote, rollback and clear, decided by ``registry.stages``, written with their event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from registry import events as audit
from registry.api.unit import UnitOfWork
from registry.errors import Ambiguous
from registry.settings import default_actor
from registry.stages import (
    Decision,
    StageAction,
    StageChange,
    check_stage_name,
    decide_clear,
    decide_promote,
    decide_rollback,
    pointers_at,
    stage_stack,
)
from registry.tables import (
    Model,
    Stage,
    StageEvent,
    StageEventPublic,
    TrafficPolicy,
    Version,
    VersionPublic,
)
from registry.traffic import weight_of
from registry.versions import (
    VersionRef,
    VersionStatus,
    check_model_name,
    parse_version_ref,
)


@dataclass(frozen=True)
class StageResult:
    """What a promote / rollback / clear did."""

    model: str
    stage: str
    action: StageAction
    from_version: int | None
    to_version: int | None
    changed: bool
    forced: bool = False
    event_id: int | None = None


class StagesApi(UnitOfWork):
    """Promote, rollback and clear, each written with its stage event and audit event."""

    def _stage_changes(self, s: Session, model_id: int, stage: str | None = None
                       ) -> list[StageChange]:
        stmt = select(StageEvent).where(col(StageEvent.model_id) == model_id)
        if stage is not None:
            stmt = stmt.where(col(StageEvent.stage) == stage)
        return [
            StageChange(e.stage, StageAction(e.action), e.from_version, e.to_version, e.at)
            for e in s.exec(stmt.order_by(col(StageEvent.id)))
        ]

    def _apply(self, s: Session, m: Model, d: Decision, actor: str, reason: str) -> StageResult:
        assert m.id is not None
        if not d.changed:
            return StageResult(m.name, d.stage, d.action, d.from_version, d.to_version, False)
        now = self.clock()
        version_id = None
        if d.to_version is not None:
            version_id = s.exec(select(Version.id).where(
                col(Version.model_id) == m.id, col(Version.number) == d.to_version)).one()
        ev = StageEvent(model_id=m.id, stage=d.stage, action=d.action.value,
                        from_version=d.from_version, to_version=d.to_version, actor=actor,
                        reason=reason, forced=d.forced, at=now)
        s.add(ev)
        row = s.get(Stage, (m.id, d.stage))
        if row is None:
            row = Stage(model_id=m.id, name=d.stage, version_id=version_id, updated_at=now)
        else:
            row.version_id, row.updated_at = version_id, now
        s.add(row)
        frm = "none" if d.from_version is None else f"v{d.from_version}"
        to = "none" if d.to_version is None else f"v{d.to_version}"
        audit.record(
            s, kind=f"stage.{d.action.value}", at=now, actor=actor, model=m.name,
            version=d.to_version, stage=d.stage,
            message=f"{d.stage}: {frm} -> {to}" + (f" ({reason})" if reason else ""),
            data={"from": d.from_version, "to": d.to_version, "forced": d.forced},
        )
        s.flush()
        return StageResult(m.name, d.stage, d.action, d.from_version, d.to_version, True,
                           d.forced, ev.id)

    def promote(
        self, model: str | None, version: str | int, stage: str, *, actor: str | None = None,
        reason: str = "", force: bool = False,
    ) -> StageResult:
        """Point ``stage`` at ``version``. Refuses a version that is not ready unless ``force``."""
        check_stage_name(stage)
        ref = VersionRef(None, version) if isinstance(version, int) else parse_version_ref(version)
        if ref.model and model and ref.model != model:
            raise Ambiguous(f"{version} names model {ref.model}, but the command names {model}",
                            hint="name the model once")
        name = ref.model or model or self.resolve_model(None)
        check_model_name(name)
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, name)
            status = s.exec(select(Version.status).where(
                col(Version.model_id) == m.id, col(Version.number) == ref.number)).first()
            if status is None:
                raise self._unknown_version(s, m, ref.number)
            # Promotion needs only the current pointer (the Stage row equals the last event).
            current = s.exec(select(Version.number).join(
                Stage, col(Stage.version_id) == col(Version.id)).where(
                col(Stage.model_id) == m.id, col(Stage.name) == stage)).first()
            d = decide_promote(stage, [current], ref.number, VersionStatus(status), force=force)
            return self._apply(s, m, d, actor, reason)

    def rollback(self, model: str | None, stage: str, *, actor: str | None = None,
                 reason: str = "") -> StageResult:
        """Point ``stage`` back at what it held before its last change."""
        check_stage_name(stage)
        name = self.resolve_model(model)
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, name)
            stack = stage_stack(self._stage_changes(s, m.id or 0, stage), stage)
            statuses = {
                n: VersionStatus(st) for n, st in s.exec(
                    select(Version.number, Version.status).where(col(Version.model_id) == m.id))
            }
            d = decide_rollback(stage, stack, statuses)
            return self._apply(s, m, d, actor, reason)

    def clear_stage(self, model: str | None, stage: str, *, actor: str | None = None,
                    reason: str = "") -> StageResult:
        """Point ``stage`` at no version (refused while it has traffic)."""
        check_stage_name(stage)
        name = self.resolve_model(model)
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, name)
            stack = stage_stack(self._stage_changes(s, m.id or 0, stage), stage)
            policy = s.get(TrafficPolicy, m.id)
            d = decide_clear(stage, stack, weight_of(policy, stage))
            return self._apply(s, m, d, actor, reason)

    def history(self, model: str | None = None, *, stage: str | None = None,
                at: datetime | None = None) -> list[StageEventPublic]:
        """Stage events oldest first (up to ``at`` when given)."""
        name = self.resolve_model(model)
        with self._read() as s:
            stmt = (select(StageEvent).join(Model, col(StageEvent.model_id) == col(Model.id))
                    .where(col(Model.name) == name))
            if stage is not None:
                stmt = stmt.where(col(StageEvent.stage) == stage)
            if at is not None:
                stmt = stmt.where(col(StageEvent.at) <= at)
            return [StageEventPublic.model_validate(e, from_attributes=True,
                                                    update={"model": name})
                    for e in s.exec(stmt.order_by(col(StageEvent.id)))]

    def stages_at(self, model: str | None, when: datetime) -> dict[str, int | None]:
        """Which version each stage pointed at at time ``when``."""
        name = self.resolve_model(model)
        with self._read() as s:
            m = s.exec(select(Model).where(col(Model.name) == name)).one()
            return pointers_at(self._stage_changes(s, m.id or 0), when)

    def stage_map(self, model: str | None) -> dict[str, VersionPublic]:
        """Each stage that points at a version, with that version."""
        name = self.resolve_model(model)
        with self._read() as s:
            rows = s.exec(select(Stage.name, Version).join(
                Version, col(Stage.version_id) == col(Version.id)).join(
                Model, col(Stage.model_id) == col(Model.id)).where(col(Model.name) == name)
                .order_by(col(Stage.name)))
            return {stage: self._public(s, v, name) for stage, v in rows}
