"""Statuses and stage actions are StrEnum columns: stored as their value strings, read back as
members, a value outside the enum refused; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import StatementError
from sqlmodel import Session

from registry.api import Registry
from registry.runs import RunStatus
from registry.stages import StageAction
from registry.tables import Run, StageEvent
from registry.versions import VersionStatus
from tests.support.factories import ArtifactFactory


def test_rows_read_back_as_members_and_are_stored_as_plain_strings(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    v = registry.register_artifact(make_artifact())
    registry.promote(None, "v1", "production")
    run = registry.create_run("support-bot", "sha256:x", status="queued")
    registry.update_run(run.id, status="training")

    (listed,) = registry.list_versions()
    assert listed.status is VersionStatus.ready and v.status is VersionStatus.ready
    (event,) = registry.history("support-bot")
    assert event.action is StageAction.promote
    (stored_run,) = registry.list_runs(status=RunStatus.training)
    assert stored_run.status is RunStatus.training
    with Session(registry.engine) as s:
        assert s.get(Run, run.id).status is RunStatus.training  # type: ignore[union-attr]
        assert s.exec(sa.select(StageEvent.action)).one()[0] is StageAction.promote  # type: ignore[call-overload]
    # The stored values are the strings they always were: no migration, old rows read.
    with registry.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT status FROM versions").scalar() == "ready"
        assert conn.exec_driver_sql("SELECT action FROM stage_events").scalar() == "promote"
        assert conn.exec_driver_sql("SELECT status FROM runs").scalar() == "training"


def test_a_value_outside_the_enum_is_refused_before_it_is_written(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    with pytest.raises(ValueError, match="'finished' is not a valid RunStatus"):
        registry.create_run("support-bot", "sha256:x", status="finished")
    run = registry.create_run("support-bot", "sha256:x")
    with Session(registry.engine) as s, pytest.raises(
            StatementError, match=r"'done' is not a RunStatus \(one of queued, training"):
        row = s.get(Run, run.id)
        assert row is not None
        row.status = "done"  # type: ignore[assignment]
        s.add(row)
        s.commit()
    assert registry.get_run(run.id).status is RunStatus.training


def test_a_stored_value_the_code_does_not_know_is_named_on_read(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    registry.register_artifact(make_artifact())
    with registry.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE versions SET status = 'quarantined'")  # past the type
    with pytest.raises(ValueError, match="'quarantined', which is not a VersionStatus"):
        registry.list_versions()
