"""Re-evaluations stored with their version: one row per `reg eval run`, append-only.

A row holds what was measured through which gateway, each metric's verdict against the
version's registration metrics (:class:`recipes.evaluation.regression.MetricCheck`),
the registration metrics that could not be measured that way, and the error when the
run could not finish (then no metrics). The newest row of a version is its latest
re-evaluation; `reg eval history` lists them, `reg doctor` reads the newest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from pydantic import Field as PydanticField
from sqlmodel import Field

from recipes.evaluation.regression import MetricCheck
from registry.tables import RegistryModel, UTCDateTime

EVENT_KIND = "version.eval_run"


class EvalRunRow(RegistryModel, table=True):
    __tablename__ = "eval_runs"

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="models.id", index=True)
    version: int
    at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    gateway: str  # the endpoint's base URL (no credentials)
    tolerance: float
    metrics: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    checks: list[Any] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    skipped: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    regressed: bool
    requests: int = 0
    error: str | None = None
    actor: str = ""


class EvalRunCreate(BaseModel):
    """What one re-evaluation found, to store (:meth:`EvalRunsApi.record_eval_run`)."""

    model: str
    version: int
    gateway: str
    tolerance: float
    metrics: dict[str, float] = PydanticField(default_factory=dict)
    checks: list[MetricCheck] = PydanticField(default_factory=list)
    skipped: dict[str, str] = PydanticField(default_factory=dict)
    requests: int = 0
    error: str | None = None

    @property
    def regressed(self) -> bool:
        return any(c.regressed for c in self.checks)


class EvalRun(EvalRunCreate):
    """A stored re-evaluation."""

    id: int
    at: datetime
    actor: str = ""
    regressed_metrics: list[str] = PydanticField(default_factory=list)

    def describe(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        if self.regressed_metrics:
            return "REGRESSED: " + ", ".join(self.regressed_metrics)
        return f"{len(self.checks)} metrics within tolerance {self.tolerance:g}"


def as_run(row: EvalRunRow, model: str) -> EvalRun:
    assert row.id is not None
    checks = [MetricCheck.model_validate(c) for c in row.checks]
    return EvalRun(id=row.id, model=model, version=row.version, at=row.at,
                   gateway=row.gateway, tolerance=row.tolerance, metrics=row.metrics,
                   checks=checks, skipped=row.skipped, requests=row.requests, error=row.error,
                   actor=row.actor, regressed_metrics=[c.metric for c in checks if c.regressed])
