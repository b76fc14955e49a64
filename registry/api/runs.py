"""Training runs through the facade: create, update (RUN_TRANSITIONS), read."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import col, select

from registry import events as audit
from registry.api.unit import UnitOfWork
from registry.errors import NotFound
from registry.events import EventKind
from registry.runs import RunStatus, check_run_transition
from registry.settings import default_actor
from registry.tables import (
    Run,
    RunPublic,
    RunUpdate,
    metadata,
)
from registry.versions import (
    check_model_name,
)


class RunSummary(NamedTuple):
    """The few columns of a run a controller plans with (no log tail, workdir or lineage)."""

    id: int
    model: str
    spec_hash: str
    status: str
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    details: dict[str, Any]


class RunsApi(UnitOfWork):
    """Training runs through the facade: create, update (RUN_TRANSITIONS), read."""

    def run_summaries(self) -> list[RunSummary]:
        """Every run, a few columns each (see :class:`RunSummary`), oldest first."""
        r = metadata.tables["runs"]
        with self.engine.connect() as conn:  # Core, as VersionsApi.version_summaries
            rows = conn.execute(sa.select(
                r.c.id, r.c.model, r.c.spec_hash, r.c.status, r.c.attempts, r.c.created_at,
                r.c.finished_at, r.c.error, r.c.details).order_by(r.c.id)).all()
            conn.rollback()
        return [RunSummary(rid, model, spec_hash, str(status), int(attempts or 0), created_at,
                           finished_at, error, details if isinstance(details, dict) else {})
                for rid, model, spec_hash, status, attempts, created_at, finished_at, error,
                details in rows]

    def create_run(
        self, model: str, spec_hash: str, *, status: RunStatus | str = RunStatus.training,
        workdir: str = "", recipe_path: str | None = None, git_commit: str | None = None,
        git_dirty: bool | None = None, creator: str | None = None, attempts: int = 1,
        phase: str = "", details: dict[str, Any] | None = None,
    ) -> RunPublic:
        check_model_name(model)
        status = RunStatus(status)  # a typo'd status fails here, before anything is written
        now = self.clock()
        creator = creator or default_actor()
        with self._write() as s:
            run = Run(
                model=model, spec_hash=spec_hash, status=status, phase=phase,
                attempts=attempts, workdir=workdir, recipe_path=recipe_path,
                git_commit=git_commit, git_dirty=git_dirty, creator=creator,
                started_at=now, details=details or {}, created_at=now, updated_at=now)
            s.add(run)
            s.flush()
            audit.record(s, kind=EventKind.run_created, at=now, actor=creator, model=model,
                         run_id=run.id, message=f"run {run.id} {status}",
                         data={"spec_hash": spec_hash, "attempts": attempts})
            return RunPublic.model_validate(run, from_attributes=True)

    def update_run(self, run_id: int, changes: RunUpdate | None = None, *,
                   actor: str | None = None, **fields: Any) -> RunPublic:
        """Partial update (only the fields given); status changes follow RUN_TRANSITIONS."""
        upd = changes or RunUpdate(**fields)
        now = self.clock()
        with self._write() as s:
            run = s.get(Run, run_id, with_for_update=True)
            if run is None:
                raise _no_run(run_id)
            changed = upd.model_dump(exclude_unset=True)
            if changed.get("status") is not None:
                check_run_transition(run.status, changed["status"])
            for key, value in changed.items():
                setattr(run, key, value)
            run.updated_at = now
            s.add(run)
            data = upd.model_dump(exclude_unset=True, mode="json")
            data.pop("log_tail", None)  # the log tail lives on the run, not in every event
            audit.record(s, kind=EventKind.run_updated, at=now, actor=actor or default_actor(),
                         model=run.model, run_id=run_id, version=run.version_number,
                         message=f"run {run_id}: {run.status}"
                         + (f" ({run.phase})" if run.phase else ""), data=data)
            return RunPublic.model_validate(run, from_attributes=True)

    def get_run(self, run_id: int) -> RunPublic:
        with self._read() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise _no_run(run_id)
            return RunPublic.model_validate(run, from_attributes=True)

    def list_runs(self, *, model: str | None = None, spec_hash: str | None = None,
                  status: RunStatus | str | None = None,
                  limit: int | None = None) -> list[RunPublic]:
        """Runs newest first."""
        stmt = select(Run)
        if model is not None:
            stmt = stmt.where(col(Run.model) == model)
        if spec_hash is not None:
            stmt = stmt.where(col(Run.spec_hash) == spec_hash)
        if status is not None:
            stmt = stmt.where(col(Run.status) == RunStatus(status))
        stmt = stmt.order_by(col(Run.id).desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read() as s:
            return [RunPublic.model_validate(r, from_attributes=True) for r in s.exec(stmt)]


def _no_run(run_id: int) -> NotFound:
    return NotFound(f"run {run_id} does not exist", hint="`reg runs` lists runs")
