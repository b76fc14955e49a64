"""Human evaluations stored with their version, and the production guard they feed.

A row per `reg eval import`, append-only: the newest row of a version is its human
evaluation (a later import replaces an earlier one's verdict, both stay readable). The
requirement comes from the recipe recorded with the version (``deploy.human_eval`` of
its stored recipe text, as ``deploy.rollout`` does for `reg rollout start`); the
decision is :func:`recipes.evaluation.human.results.gate_problems` (pure).

:func:`production_problems` runs inside the stage change's transaction on every path that
moves a version into production: `reg promote`, ``deploy.promote_to``, the canary
controller's final promotion, and the start of a rollout (whose end is production).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, col, select

from recipes.core.names import adapter_name
from recipes.evaluation.human.results import HumanEvalResult, gate_problems
from recipes.schema import HumanEvalGate
from registry.errors import Refused
from registry.tables import RegistryModel, UTCDateTime, Version

EVENT_KIND = "version.human_eval"


class HumanEvalRow(RegistryModel, table=True):
    __tablename__ = "human_evaluations"

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="models.id", index=True)
    version: int  # the candidate's number
    other: int | None = None  # what it was compared with; None: the base model
    export_id: str = Field(max_length=32)
    win_rate: float | None = None
    alpha: float | None = None
    result: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    actor: str = ""
    at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


def latest(s: Session, model_id: int, version: int) -> HumanEvalResult | None:
    """The newest stored human evaluation of ``version``, or None."""
    row = s.exec(select(HumanEvalRow).where(
        col(HumanEvalRow.model_id) == model_id, col(HumanEvalRow.version) == version,
    ).order_by(col(HumanEvalRow.id).desc())).first()
    return None if row is None else as_result(row)


def as_result(row: HumanEvalRow) -> HumanEvalResult:
    return HumanEvalResult.model_validate({**row.result, "imported_at": row.at})


def requirement(recipe_text: str, ref: str) -> HumanEvalGate | None:
    """``deploy.human_eval`` of the recipe recorded with a version (None: not required)."""
    from recipes.loading.validate import recipe_from_text

    recipe = recipe_from_text(recipe_text, f"<recipe of {ref}>")
    return None if recipe is None else recipe.spec.deploy.human_eval


def fix_hint(model: str, version: int, compare: int | None) -> str:
    other = f" v{compare}" if compare is not None and compare != version else ""
    return (f"run `reg eval export {model} v{version}{other} OUT --raters 3`, have the "
            f"raters fill OUT/sheets/, then `reg eval import OUT/key.json OUT/sheets/*.csv`")


def production_problems(s: Session, model_id: int, model: str, version: int
                        ) -> list[str]:
    """Why ``version`` may not serve production under its recipe's ``deploy.human_eval``."""
    text = s.exec(select(Version.recipe_text).where(
        col(Version.model_id) == model_id, col(Version.number) == version)).first()
    ref = adapter_name(model, version)
    gate = requirement(text or "", ref)
    if gate is None:
        return []
    return gate_problems(gate, latest(s, model_id, version), ref)


def guard_production(s: Session, model_id: int, model: str, version: int,
                     current: int | None, *, force: bool) -> list[str]:
    """Refuse moving ``version`` into production while its human evaluation is missing or
    fails; with ``force``, the problems come back as warnings (recorded with the change)."""
    problems = production_problems(s, model_id, model, version)
    if not problems or force:
        return problems
    raise Refused(f"{adapter_name(model, version)} cannot serve production: "
                  + "; ".join(problems), hint=fix_hint(model, version, current))
