"""Rollouts through the facade: start one, read them, and advance one with its effect.

``advance_rollout`` is the canary controller's only write: the new state, the canary
weight and the stage pointers it implies, and the audit event with the analysis
values, all in one transaction, refused when the rollout moved since it was read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from recipes.core.names import CANARY, PRODUCTION
from registry import events as audit
from registry.api.stages import StagesApi
from registry.api.traffic import TrafficApi
from registry.errors import NotFound, Refused
from registry.human_eval import guard_production
from registry.rollouts import RolloutPublic, RolloutRow, StaleRollout, canary_weights
from registry.settings import default_actor
from registry.stages import decide_clear, decide_promote
from registry.tables import Model, Stage, Version
from registry.traffic import load_policy, share_of
from registry.versions import VersionStatus


@dataclass(frozen=True)
class RolloutChange:
    """What one controller decision changes, decided on ``expected_revision``."""

    expected_revision: int
    phase: str
    active: bool
    step: int
    weight: int
    failures: int
    step_started_at: datetime
    reason: str
    event: str  # the audit event's kind, e.g. "rollout.step"
    canary_weight: int | None = None  # set the canary's traffic share first (None: leave it)
    stages: Sequence[tuple[str, int | None]] = ()  # then point these stages (None: clear)
    analysis: Sequence[Mapping[str, Any]] | None = None  # None keeps the stored analysis
    data: Mapping[str, Any] = field(default_factory=dict)  # more for the audit event
    actor: str | None = None


class RolloutsApi(StagesApi, TrafficApi):
    """Start, read and advance rollouts; effects commit with the state that implies them."""

    def _rollout_public(self, row: RolloutRow, model: str) -> RolloutPublic:
        return RolloutPublic.model_validate(row, from_attributes=True, update={"model": model})

    def _stage_version(self, s: Session, model_id: int, stage: str) -> int | None:
        return s.exec(select(Version.number).join(
            Stage, col(Stage.version_id) == col(Version.id)).where(
            col(Stage.model_id) == model_id, col(Stage.name) == stage)).first()

    def start_rollout(self, model: str | None, candidate: int, plan: Mapping[str, Any], *,
                      origin: str = "manual", actor: str | None = None,
                      reason: str = "") -> RolloutPublic:
        """Record a new rollout of ``candidate`` (phase ``pending``); nothing moves yet.

        Refused while another rollout of the model is active (abort or supersede it
        first), when production serves no version to compare against, or when the
        candidate is not a ready version other than production's.
        """
        name = self.resolve_model(model)
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, name)
            assert m.id is not None
            baseline = self._start_checks(s, m, candidate)
            active = s.exec(select(RolloutRow).where(col(RolloutRow.model_id) == m.id,
                                                     col(RolloutRow.active))).first()
            if active is not None:
                raise Refused(
                    f"{name} already has an active rollout of v{active.candidate} "
                    f"({active.phase})",
                    hint=f"`reg rollout abort {name}` first, or wait for it to end")
            now = self.clock()
            row = RolloutRow(
                model_id=m.id, active_model_id=m.id, candidate=candidate, baseline=baseline,
                previous_canary=self._stage_version(s, m.id, CANARY), phase="pending",
                plan=dict(plan), origin=origin, actor=actor, reason=reason,
                step_started_at=now, started_at=now, updated_at=now)
            s.add(row)
            s.flush()
            audit.record(s, kind="rollout.started", at=now, actor=actor, model=name,
                         version=candidate,
                         message=f"rollout of v{candidate} against v{baseline} started"
                         + (f" ({reason})" if reason else ""),
                         data={"rollout": row.id, "baseline": baseline, "plan": dict(plan),
                               "origin": origin})
            return self._rollout_public(row, name)

    def check_rollout_start(self, model: str | None, candidate: int) -> int:
        """Raise what :meth:`start_rollout` would refuse (but an active rollout); returns
        the baseline. Lets a caller supersede an active rollout only for a valid start."""
        name = self.resolve_model(model)
        with self._read() as s:
            m = s.exec(select(Model).where(col(Model.name) == name)).one()
            return self._start_checks(s, m, candidate)

    def _start_checks(self, s: Session, m: Model, candidate: int) -> int:
        assert m.id is not None
        name = m.name
        status = s.exec(select(Version.status).where(
            col(Version.model_id) == m.id, col(Version.number) == candidate)).first()
        if status is None:
            raise self._unknown_version(s, m, candidate)
        if VersionStatus(status) is not VersionStatus.ready:
            raise Refused(f"{name}@v{candidate} is {status}; only a ready version rolls out",
                          hint=f"`reg show {name}@v{candidate}` says why")
        baseline = self._stage_version(s, m.id, PRODUCTION)
        if baseline is None:
            raise Refused(
                f"production of {name} serves no version to compare v{candidate} with",
                hint=f"promote the first version directly: `reg promote {name} "
                f"v{candidate} production`")
        if baseline == candidate:
            raise Refused(f"production of {name} already serves v{candidate}")
        # A rollout ends in production: a human evaluation it requires is checked up front.
        guard_production(s, m.id, name, candidate, baseline, force=False)
        return baseline

    def get_rollout(self, rollout_id: int) -> RolloutPublic:
        with self._read() as s:
            row = s.get(RolloutRow, rollout_id)
            if row is None:
                raise NotFound(f"no rollout {rollout_id}", hint="`reg rollout history` lists them")
            model = s.get(Model, row.model_id)
            assert model is not None
            return self._rollout_public(row, model.name)

    def list_rollouts(self, model: str | None = None, *, active: bool | None = None,
                      limit: int | None = None) -> list[RolloutPublic]:
        """Rollouts newest first (of ``model`` when given; only active ones with ``active``)."""
        with self._read() as s:
            stmt = select(RolloutRow, Model.name).join(
                Model, col(RolloutRow.model_id) == col(Model.id))
            if model is not None:
                stmt = stmt.where(col(Model.name) == model)
            if active is not None:
                stmt = stmt.where(col(RolloutRow.active) == active)
            stmt = stmt.order_by(col(RolloutRow.id).desc())
            if limit is not None:
                stmt = stmt.limit(limit)
            return [self._rollout_public(row, name) for row, name in s.exec(stmt)]

    def note_rollout_analysis(self, rollout_id: int,
                              analysis: Sequence[Mapping[str, Any]]) -> None:
        """Store the latest analysis values of an active rollout, for status displays.

        Not a decision: no revision bump, no audit event (decisions carry theirs).
        """
        with self._write() as s:
            row = s.get(RolloutRow, rollout_id)
            if row is None or not row.active:
                return
            row.analysis = [dict(a) for a in analysis]
            row.updated_at = self.clock()
            s.add(row)

    def advance_rollout(self, rollout_id: int, change: RolloutChange) -> RolloutPublic:
        """Store ``change`` and make its effect true, in one transaction.

        Order inside the transaction: a lower canary weight before the stage pointers
        (so a stage about to be cleared carries no traffic), a higher one after them;
        deploy guards judge the pointers; then the rollout row and its audit event.
        Raises :class:`StaleRollout` when the stored revision is not
        ``change.expected_revision``.
        """
        actor = change.actor or default_actor()
        with self._write() as s:
            row = s.get(RolloutRow, rollout_id)
            if row is None:
                raise NotFound(f"no rollout {rollout_id}")
            m = s.get(Model, row.model_id)
            assert m is not None and m.id is not None
            m = self._lock_model(s, m.name)
            assert m.id is not None
            s.refresh(row)
            if row.revision != change.expected_revision:
                raise StaleRollout(
                    f"rollout {rollout_id} of {m.name} changed meanwhile (revision "
                    f"{row.revision}, expected {change.expected_revision})",
                    hint="read it again and retry")
            if not row.active:
                raise StaleRollout(f"rollout {rollout_id} of {m.name} has ended ({row.phase})")
            why = f"rollout {rollout_id}: {change.reason}"
            # A stage about to be cleared must carry no traffic first; a stage about to be
            # given traffic must point at its version first.
            raising = change.canary_weight is not None and change.canary_weight > 0
            if not raising:
                self._set_canary_weight(s, m, change.canary_weight, actor=actor, reason=why)
            for stage, version in change.stages:
                self._point(s, m, stage, version, actor=actor, reason=why)
            if raising:
                self._set_canary_weight(s, m, change.canary_weight, actor=actor, reason=why)
            now = self.clock()
            row.phase, row.active, row.step = change.phase, change.active, change.step
            row.weight, row.failures = change.weight, change.failures
            row.step_started_at, row.reason = change.step_started_at, change.reason
            if change.analysis is not None:
                row.analysis = [dict(a) for a in change.analysis]
            row.revision += 1
            row.updated_at = now
            if not change.active:
                row.ended_at = now
                row.active_model_id = None
            s.add(row)
            audit.record(s, kind=change.event, at=now, actor=actor, model=m.name,
                         version=row.candidate, stage=CANARY, message=change.reason,
                         data={"rollout": row.id, "phase": row.phase, "step": row.step,
                               "weight": row.weight, "failures": row.failures,
                               "analysis": row.analysis, **dict(change.data)})
            s.flush()
            return self._rollout_public(row, m.name)

    def _set_canary_weight(self, s: Session, m: Model, weight: int | None, *, actor: str,
                           reason: str) -> None:
        if weight is None:
            return
        assert m.id is not None
        current = load_policy(s, m.id, m.name)
        weights = canary_weights(None if current is None else current.weights, weight)
        if current is None or dict(current.weights) != weights:
            self._put_traffic(s, m, weights, None if current is None else current.shadow,
                              actor=actor, reason=reason)

    def _point(self, s: Session, m: Model, stage: str, version: int | None, *, actor: str,
               reason: str) -> None:
        """Point ``stage`` at ``version`` (None: clear it) inside the caller's transaction."""
        assert m.id is not None
        current = self._stage_version(s, m.id, stage)
        if version is None:
            if current is None:
                return
            stack = [current]
            d = decide_clear(stage, stack, share_of(load_policy(s, m.id, m.name), stage))
        else:
            status = s.exec(select(Version.status).where(
                col(Version.model_id) == m.id, col(Version.number) == version)).one()
            d = decide_promote(stage, [current], version, VersionStatus(status), force=False)
        self._apply(s, m, d, actor, reason)
