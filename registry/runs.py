"""Training runs: the reconciler's record of each attempt to turn a spec hash into a version.

Statuses and their allowed changes sit in one table; the reconciler owns the
phases (free text such as ``data``, ``train``, ``evaluate``, ``register``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Session, col, select

from registry.errors import NotFound, Refused
from registry.tables import Run, RunPublic, RunUpdate


class RunStatus(StrEnum):
    queued = "queued"  # planned, not started
    training = "training"  # data prep, training, evaluation or registration in progress
    succeeded = "succeeded"  # registered a ready version
    rejected = "rejected"  # registered a version that failed a gate
    failed = "failed"  # crashed; may be retried (with backoff, by the reconciler)
    cancelled = "cancelled"  # superseded (e.g. the recipe changed again) or pruned


# The one table of allowed status changes. A status may always be re-set to
# itself (a resumed run writes `training` again).
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.queued: frozenset({RunStatus.training, RunStatus.failed, RunStatus.cancelled}),
    RunStatus.training: frozenset(
        {RunStatus.succeeded, RunStatus.rejected, RunStatus.failed, RunStatus.cancelled}
    ),
    RunStatus.failed: frozenset({RunStatus.queued, RunStatus.training, RunStatus.cancelled}),
    RunStatus.succeeded: frozenset(),
    RunStatus.rejected: frozenset(),
    RunStatus.cancelled: frozenset(),
}


def check_run_transition(current: RunStatus, target: RunStatus) -> None:
    if target is current or target in RUN_TRANSITIONS[current]:
        return
    allowed = sorted(s.value for s in RUN_TRANSITIONS[current]) or ["none (finished)"]
    raise Refused(
        f"a {current.value} run cannot become {target.value} (allowed: {', '.join(allowed)})",
        hint="start a new run instead",
    )


def create(session: Session, run: Run) -> Run:
    RunStatus(run.status)  # a typo'd status fails here, before anything is written
    session.add(run)
    session.flush()
    return run


def update(session: Session, run_id: int, changes: RunUpdate, at: datetime) -> Run:
    run = session.get(Run, run_id, with_for_update=True)
    if run is None:
        raise NotFound(f"run {run_id} does not exist", hint="`reg runs` lists runs")
    data = changes.model_dump(exclude_unset=True)
    if "status" in data and data["status"] is not None:
        check_run_transition(RunStatus(run.status), RunStatus(data["status"]))
    for key, value in data.items():
        setattr(run, key, value)
    run.updated_at = at
    session.add(run)
    return run


def get(session: Session, run_id: int) -> RunPublic:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id} does not exist", hint="`reg runs` lists runs")
    return RunPublic.model_validate(run, from_attributes=True)


def list_runs(
    session: Session,
    *,
    model: str | None = None,
    spec_hash: str | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> list[RunPublic]:
    """Runs newest first."""
    stmt = select(Run)
    if model is not None:
        stmt = stmt.where(col(Run.model) == model)
    if spec_hash is not None:
        stmt = stmt.where(col(Run.spec_hash) == spec_hash)
    if status is not None:
        stmt = stmt.where(col(Run.status) == status)
    stmt = stmt.order_by(col(Run.id).desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return [RunPublic.model_validate(r, from_attributes=True) for r in session.exec(stmt)]
