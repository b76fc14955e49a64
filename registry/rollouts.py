"""Stored rollouts: one row per rollout of a candidate version, its state and its plan.

The registry stores what the canary controller decides; it does not decide. The
phase is a string here (its ``StrEnum`` and the one transition table live with the
controller, in ``rollout.canary.phases``); the registry guarantees what must hold
whatever the controller is:

- at most one active rollout per model (``active_model_id`` is the model's id while
  the rollout is active and NULL after, under a unique constraint: NULLs never collide,
  on SQLite and PostgreSQL alike, without a dialect-specific partial index);
- compare-and-set: a change names the revision it was decided on, and a stale one is
  refused (:class:`StaleRollout`), so two controllers cannot both move a rollout;
- a change and its effect on stages and traffic commit in one transaction, with an
  audit event carrying the analysis values.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

from recipes.core.names import CANARY, PRODUCTION
from registry.errors import Refused
from registry.tables import RegistryModel, UTCDateTime


class StaleRollout(Refused):
    """The rollout changed since the caller read it (another controller, or a person)."""


class RolloutBase(RegistryModel):
    candidate: int  # the version rolled out
    baseline: int | None  # what production served when it started
    previous_canary: int | None  # what the canary stage held before; restored at the end
    phase: str = Field(max_length=24)
    active: bool = True  # False once it ended (succeeded, rolled back, aborted)
    step: int = -1  # index into the plan's steps; -1 before the first
    weight: int = 0  # the canary's traffic percentage now
    failures: int = 0
    plan: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    analysis: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=sa.Column(sa.JSON(), nullable=False))
    origin: str = Field(default="manual", max_length=16)  # "recipe" (reconciler) or "manual"
    actor: str = ""
    reason: str = ""
    revision: int = 1
    step_started_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    started_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    ended_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


class RolloutRow(RolloutBase, table=True):
    __tablename__ = "rollouts"
    __table_args__ = (sa.UniqueConstraint("active_model_id", name="uq_rollouts_one_active"),)

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="models.id", index=True)
    active_model_id: int | None = None  # model_id while active, else NULL


class RolloutPublic(RolloutBase):
    id: int
    model: str


def canary_weights(current: Mapping[str, int] | None, canary_weight: int) -> dict[str, int]:
    """The weights that give the canary ``canary_weight``% and production what is left.

    Other stages keep their weights; production absorbs the difference. Pure.
    """
    weights = dict(current or {PRODUCTION: 100})
    others = sum(w for s, w in weights.items() if s not in (CANARY, PRODUCTION))
    production = 100 - others - canary_weight
    if production < 0:
        raise Refused(
            f"a canary weight of {canary_weight}% leaves production {production}% "
            f"(other stages take {others}%)",
            hint="lower the other stages' weights with `reg traffic` first",
        )
    weights[PRODUCTION] = production
    if canary_weight > 0:
        weights[CANARY] = canary_weight
    else:
        weights.pop(CANARY, None)
    return weights
