"""The audit log: one append-only row for everything that changes state.

Who, when, what, why. Rows are written in the same transaction as the change
they describe, so the log never claims a change that did not happen. The
largest event id doubles as a cheap change marker: readers (the gateway)
poll it and reload only when it moves; on PostgreSQL each transaction that
records one also notifies them (:mod:`registry.changes`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from registry.changes import notify
from registry.tables import Event, EventPublic


class EventKind(StrEnum):
    """The registry's own event kinds; other layers may record kinds of their own."""

    model_created = "model.created"
    model_updated = "model.updated"  # description, labels or owner changed at a registration
    version_registered = "version.registered"
    version_status = "version.status"
    stage_promote = "stage.promote"
    stage_rollback = "stage.rollback"
    stage_clear = "stage.clear"
    traffic_set = "traffic.set"
    run_created = "run.created"
    run_updated = "run.updated"


def record(
    session: Session,
    *,
    kind: str,
    at: datetime,
    actor: str,
    model: str | None = None,
    version: int | None = None,
    stage: str | None = None,
    run_id: int | None = None,
    message: str = "",
    data: dict[str, Any] | None = None,
) -> Event:
    """Add an event to ``session``'s transaction (committed with the change it describes)."""
    ev = Event(
        at=at, kind=str(kind), actor=actor, model=model, version=version, stage=stage,
        run_id=run_id, message=message, data=data or {},
    )
    session.add(ev)
    notify(session)  # PostgreSQL: readers listening hear of it when this commits
    return ev


def query(
    session: Session,
    *,
    since_id: int | None = None,
    since: datetime | None = None,
    model: str | None = None,
    kinds: list[str] | None = None,
    limit: int | None = None,
) -> list[EventPublic]:
    """Events oldest first, filtered; with ``limit``, the newest ``limit`` of them."""
    stmt = select(Event)
    if since_id is not None:
        stmt = stmt.where(col(Event.id) > since_id)
    if since is not None:
        stmt = stmt.where(col(Event.at) >= since)
    if model is not None:
        stmt = stmt.where(col(Event.model) == model)
    if kinds:
        stmt = stmt.where(col(Event.kind).in_(kinds))
    if limit is not None:
        rows = list(session.exec(stmt.order_by(col(Event.id).desc()).limit(limit)))
        rows.reverse()
    else:
        rows = list(session.exec(stmt.order_by(col(Event.id))))
    return [EventPublic.model_validate(r, from_attributes=True) for r in rows]


def change_marker(session: Session) -> int:
    """The id of the newest event (0 when none): it changes whenever registry state does."""
    value = session.exec(select(sa.func.max(Event.id))).one()
    return int(value or 0)
