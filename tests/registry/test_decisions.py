"""Pure decisions: status and stage tables, stage stacks, references (traffic: test_traffic.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from registry.errors import InvalidName, Refused
from registry.runs import RUN_TRANSITIONS, RunStatus, check_run_transition
from registry.stages import (
    STAGE_ADMISSION,
    Admission,
    StageAction,
    StageChange,
    check_stage_name,
    decide_clear,
    decide_promote,
    decide_rollback,
    pointers_at,
    stage_stack,
)
from registry.versions import (
    VERSION_TRANSITIONS,
    VersionRef,
    VersionStatus,
    check_status_transition,
    parse_version_ref,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
R = VersionStatus.ready


def change(stage: str, action: StageAction, to: int | None, minute: int = 0) -> StageChange:
    return StageChange(stage, action, None, to, T0 + timedelta(minutes=minute))


def test_every_status_has_a_row_in_each_table() -> None:
    assert set(VERSION_TRANSITIONS) == set(VersionStatus)
    assert set(STAGE_ADMISSION) == set(VersionStatus)
    assert set(RUN_TRANSITIONS) == set(RunStatus)
    assert STAGE_ADMISSION[VersionStatus.ready] is Admission.allowed


@pytest.mark.parametrize(("current", "target", "allowed"), [
    pytest.param(VersionStatus.training, VersionStatus.ready, True, id="training-ready"),
    pytest.param(VersionStatus.ready, VersionStatus.archived, True, id="ready-archived"),
    pytest.param(VersionStatus.ready, VersionStatus.training, False, id="ready-training"),
    pytest.param(VersionStatus.rejected, VersionStatus.ready, False, id="rejected-ready"),
    pytest.param(VersionStatus.archived, VersionStatus.ready, False, id="archived-ready"),
])
def test_version_status_transitions(
    current: VersionStatus, target: VersionStatus, allowed: bool
) -> None:
    if allowed:
        check_status_transition(current, target, deployed_in=[])
    else:
        with pytest.raises(Refused, match=f"in status {current.value} cannot become {target}"):
            check_status_transition(current, target, deployed_in=[])


def test_a_deployed_version_cannot_be_archived() -> None:
    with pytest.raises(Refused, match=r"stage\(s\) canary, production and cannot be archived"):
        check_status_transition(R, VersionStatus.archived, deployed_in=["production", "canary"])


def test_stack_replays_promote_clear_and_rollback() -> None:
    events = [
        change("production", StageAction.promote, 1),
        change("canary", StageAction.promote, 2),
        change("production", StageAction.promote, 2),
        change("production", StageAction.clear, None),
        change("production", StageAction.promote, 3),
        change("production", StageAction.rollback, None),
    ]
    assert stage_stack(events, "production") == [1, 2, None]
    assert stage_stack(events, "canary") == [2]
    assert stage_stack(events, "staging") == []


def test_rollback_goes_one_step_back_each_time() -> None:
    statuses = {1: R, 2: R, 3: R}
    d = decide_rollback("production", [1, 2, 3], statuses, 0)
    assert (d.from_version, d.to_version, d.changed) == (3, 2, True)
    assert decide_rollback("production", [1, 2], statuses, 0).to_version == 1
    with pytest.raises(Refused, match=r"has no earlier version to roll back to .*points at v1"):
        decide_rollback("production", [1], statuses, 0)


def test_rollback_refuses_an_archived_target() -> None:
    with pytest.raises(Refused, match="would roll back to v1, which is now archived"):
        decide_rollback("production", [1, 2], {1: VersionStatus.archived, 2: R}, 0)


@pytest.mark.parametrize(("status", "force", "outcome"), [
    pytest.param(R, False, "ok", id="ready"),
    pytest.param(VersionStatus.rejected, False, "needs --force", id="rejected"),
    pytest.param(VersionStatus.rejected, True, "forced", id="rejected-forced"),
    pytest.param(VersionStatus.failed, True, "forced", id="failed-forced"),
    pytest.param(VersionStatus.training, True, "never", id="training"),
    pytest.param(VersionStatus.archived, True, "never", id="archived"),
])
def test_promotion_admission(status: VersionStatus, force: bool, outcome: str) -> None:
    if outcome in ("ok", "forced"):
        d = decide_promote("production", [1], 4, status, force=force)
        assert (d.from_version, d.to_version, d.forced) == (1, 4, outcome == "forced")
    elif outcome == "never":
        with pytest.raises(Refused, match="can never be in a stage"):
            decide_promote("production", [1], 4, status, force=force)
    else:
        with pytest.raises(Refused, match="refusing to promote it to production without --force"):
            decide_promote("production", [1], 4, status, force=force)


def test_promoting_the_current_version_is_no_change() -> None:
    assert not decide_promote("production", [1, 4], 4, R, force=False).changed


def test_rollback_to_no_version_is_refused_while_the_stage_has_traffic() -> None:
    # Back past a clear: [.., None, 2] returns to no version, which a weighted stage cannot.
    assert decide_rollback("staging", [1, None, 2], {1: R, 2: R}, 0).to_version is None
    with pytest.raises(Refused, match=r"staging would roll back to no version .* receives 20%"):
        decide_rollback("staging", [1, None, 2], {1: R, 2: R}, 20)


def test_clear_is_refused_while_the_stage_has_traffic() -> None:
    assert decide_clear("canary", [2], 0).to_version is None
    with pytest.raises(Refused, match="canary receives 10% of traffic"):
        decide_clear("canary", [2], 10)


@pytest.mark.parametrize("name", [
    pytest.param("production", id="standard"), pytest.param("eu-west", id="custom"),
    pytest.param("shadow2", id="digits"),
])
def test_stage_names_accepted(name: str) -> None:
    assert check_stage_name(name) == name


@pytest.mark.parametrize("name", [
    pytest.param("Production", id="upper"), pytest.param("v2", id="version-like"),
    pytest.param("-x", id="dash"), pytest.param("a" * 33, id="too-long"),
    pytest.param("", id="empty"),
])
def test_stage_names_refused(name: str) -> None:
    with pytest.raises(InvalidName, match="is not a valid stage name"):
        check_stage_name(name)


def test_pointers_at_a_time() -> None:
    events = [change("production", StageAction.promote, 1, 0),
              change("production", StageAction.promote, 2, 10),
              change("canary", StageAction.promote, 3, 20)]
    assert pointers_at(events, T0 - timedelta(minutes=1)) == {}
    assert pointers_at(events, T0 + timedelta(minutes=15)) == {"production": 2}
    assert pointers_at(events, T0 + timedelta(minutes=20)) == {"production": 2, "canary": 3}


@pytest.mark.parametrize(("text", "ref"), [
    pytest.param("v2", VersionRef(None, 2), id="v2"),
    pytest.param("12", VersionRef(None, 12), id="bare"),
    pytest.param("support-bot@v3", VersionRef("support-bot", 3), id="model-at"),
    pytest.param(" bot@4 ", VersionRef("bot", 4), id="model-at-bare"),
])
def test_version_refs(text: str, ref: VersionRef) -> None:
    assert parse_version_ref(text) == ref


@pytest.mark.parametrize("text", [
    pytest.param("v0", id="zero"), pytest.param("latest", id="word"),
    pytest.param("Bot@v1", id="bad-model"), pytest.param("@v1", id="empty-model"),
])
def test_bad_version_refs(text: str) -> None:
    with pytest.raises(InvalidName, match="is not a"):
        parse_version_ref(text)


def test_run_transitions() -> None:
    check_run_transition(RunStatus.training, RunStatus.training)  # a resumed run
    check_run_transition(RunStatus.failed, RunStatus.training)  # a retry
    with pytest.raises(Refused, match="a succeeded run cannot become failed"):
        check_run_transition(RunStatus.succeeded, RunStatus.failed)
