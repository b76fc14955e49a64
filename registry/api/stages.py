"""Stages: promote, rollback and clear, decided by ``registry.stages``, written with their event."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from recipes.core.names import PRODUCTION
from registry import events as audit
from registry.api.unit import UnitOfWork
from registry.db import is_sqlite
from registry.deployments import (
    after_change,
    check_servable,
    load_deployments,
    run_guards,
    version_deployment,
)
from registry.errors import Ambiguous
from registry.human_eval import guard_production
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
    Version,
    VersionPublic,
)
from registry.traffic import load_policy, share_of
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
    warnings: tuple[str, ...] = ()  # what the deploy guards let through with force


# Any constant: stage changes of all models take this transaction lock on PostgreSQL, since
# the adapter-slot guard judges every model deployed on an engine, not one model's row.
_DEPLOY_LOCK = 0x7265675F64706C  # "reg_dpl"


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

    def _guard(self, s: Session, m: Model, d: Decision, *, force: bool) -> tuple[str, ...]:
        """Run the deploy rules on the change ``d`` would make; raises to refuse it.

        The version moved into the stage must be servable by its deploy target, and a
        promotion into production must pass the human evaluation its recipe requires
        (``deploy.human_eval``: ``registry.human_eval``); then each injected guard judges
        the deployed set before and after the change.
        """
        assert m.id is not None
        target = None
        human: tuple[str, ...] = ()
        if d.to_version is not None:
            target = version_deployment(s, m.id, m.name, d.to_version)
            if target is not None:
                check_servable(target, d.stage)
            if d.stage == PRODUCTION and d.action is StageAction.promote:
                human = tuple(guard_production(s, m.id, m.name, d.to_version, d.from_version,
                                               force=force))
        if not self.guards:
            return human
        if not is_sqlite(self.engine):  # SQLite's IMMEDIATE transaction already excludes
            s.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DEPLOY_LOCK})
        before = load_deployments(s)
        after = after_change(before, m.name, d.stage, target)
        return human + tuple(run_guards(self.guards, before, after, force=force))

    def _apply(self, s: Session, m: Model, d: Decision, actor: str, reason: str, *,
               force: bool = False) -> StageResult:
        assert m.id is not None
        if not d.changed:
            return StageResult(m.name, d.stage, d.action, d.from_version, d.to_version, False)
        warnings = self._guard(s, m, d, force=force)
        forced = d.forced or bool(warnings)
        now = self.clock()
        version_id = None
        if d.to_version is not None:
            version_id = s.exec(select(Version.id).where(
                col(Version.model_id) == m.id, col(Version.number) == d.to_version)).one()
        ev = StageEvent(model_id=m.id, stage=d.stage, action=d.action,
                        from_version=d.from_version, to_version=d.to_version, actor=actor,
                        reason=reason, forced=forced, at=now)
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
            data={"from": d.from_version, "to": d.to_version, "forced": forced,
                  **({"warnings": list(warnings)} if warnings else {})},
        )
        s.flush()
        return StageResult(m.name, d.stage, d.action, d.from_version, d.to_version, True,
                           forced, ev.id, warnings)

    def promote(
        self, model: str | None, version: str | int, stage: str, *, actor: str | None = None,
        reason: str = "", force: bool = False,
    ) -> StageResult:
        """Point ``stage`` at ``version``.

        Refused for a version that is not ready, or beyond what a deploy guard allows
        (adapter slots), unless ``force``; never for a version its target cannot serve.
        """
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
            return self._apply(s, m, d, actor, reason, force=force)

    def rollback(self, model: str | None, stage: str, *, actor: str | None = None,
                 reason: str = "", force: bool = False) -> StageResult:
        """Point ``stage`` back at what it held before its last change.

        The deploy guards judge it as a promotion: ``force`` lets it exceed the slots.
        """
        with self._stage_write(model, stage) as (s, m, stack):
            statuses = {
                n: VersionStatus(st) for n, st in s.exec(
                    select(Version.number, Version.status).where(col(Version.model_id) == m.id))
            }
            share = share_of(load_policy(s, m.id or 0, m.name), stage)
            d = decide_rollback(stage, stack, statuses, share)
            return self._apply(s, m, d, actor or default_actor(), reason, force=force)

    def clear_stage(self, model: str | None, stage: str, *, actor: str | None = None,
                    reason: str = "") -> StageResult:
        """Point ``stage`` at no version (refused while it has traffic)."""
        with self._stage_write(model, stage) as (s, m, stack):
            d = decide_clear(stage, stack, share_of(load_policy(s, m.id or 0, m.name), stage))
            return self._apply(s, m, d, actor or default_actor(), reason)

    @contextlib.contextmanager
    def _stage_write(self, model: str | None, stage: str
                     ) -> Iterator[tuple[Session, Model, list[int | None]]]:
        """A write transaction with the model locked and ``stage``'s stack replayed."""
        check_stage_name(stage)
        name = self.resolve_model(model)
        with self._write() as s:
            m = self._lock_model(s, name)
            yield s, m, stage_stack(self._stage_changes(s, m.id or 0, stage), stage)

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
