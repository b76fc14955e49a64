"""Stages: which version each stage points at, decided by pure functions.

A stage's history is a list of append-only events. Replaying them gives the
stage's *stack*: ``promote`` pushes the new version, ``clear`` pushes "none",
``rollback`` pops. So a rollback returns to what the stage pointed at before
its last change, and a second rollback goes one further back.

Nothing here does I/O; ``registry.api`` loads events, calls these, writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from recipes.core.names import STAGE_NAME_HINT, STANDARD_STAGES, stage_name_problem
from registry.errors import InvalidName, Refused
from registry.versions import VersionStatus

__all__ = ["STANDARD_STAGES"]


class StageAction(StrEnum):
    promote = "promote"  # point the stage at a version
    rollback = "rollback"  # return to the version before the last change
    clear = "clear"  # point the stage at no version


class Admission(StrEnum):
    allowed = "allowed"
    needs_force = "needs_force"
    never = "never"


# The one table: may a stage point at a version in this status?
STAGE_ADMISSION: dict[VersionStatus, Admission] = {
    VersionStatus.ready: Admission.allowed,
    VersionStatus.rejected: Admission.needs_force,  # a gate failed; a person may overrule
    VersionStatus.failed: Admission.needs_force,
    VersionStatus.training: Admission.never,  # no artifact yet
    VersionStatus.archived: Admission.never,  # retired on purpose
}


def check_stage_name(name: str) -> str:
    """Stage names: lowercase, digits, '-', up to 32 chars, and not shaped like `v2`."""
    problem = stage_name_problem(name)
    if problem is not None:
        raise InvalidName(problem, hint=STAGE_NAME_HINT)
    return name


@dataclass(frozen=True)
class StageChange:
    """One stored stage event, as the decisions need it."""

    stage: str
    action: StageAction
    from_version: int | None
    to_version: int | None
    at: datetime


@dataclass(frozen=True)
class Decision:
    """What to write: the stage moves ``from_version -> to_version`` (or nothing changes)."""

    stage: str
    action: StageAction
    from_version: int | None
    to_version: int | None
    forced: bool = False

    @property
    def changed(self) -> bool:
        return self.from_version != self.to_version


def stage_stack(events: Iterable[StageChange], stage: str) -> list[int | None]:
    """Replay one stage's events (oldest first) into its stack; the top is the current value."""
    stack: list[int | None] = []
    for e in events:
        if e.stage != stage:
            continue
        if e.action is StageAction.rollback:
            if stack:
                stack.pop()
        else:
            stack.append(e.to_version)
    return stack


def current(stack: Sequence[int | None]) -> int | None:
    return stack[-1] if stack else None


def decide_promote(
    stage: str,
    stack: Sequence[int | None],
    version: int,
    status: VersionStatus,
    *,
    force: bool,
) -> Decision:
    """Point ``stage`` at ``version``, if its status admits it (see STAGE_ADMISSION)."""
    check_stage_name(stage)
    admission = STAGE_ADMISSION[status]
    if admission is Admission.never:
        raise Refused(
            f"v{version} is {status.value} and can never be in a stage",
            hint="promote a ready version instead (`reg versions` lists them)",
        )
    if admission is Admission.needs_force and not force:
        raise Refused(
            f"v{version} is {status.value} (it did not pass its gates); refusing to promote it "
            f"to {stage} without --force",
            hint="check `reg show` for its gate results; --force promotes it anyway "
            "(recorded in the audit log)",
        )
    forced = admission is Admission.needs_force
    return Decision(stage, StageAction.promote, current(stack), version, forced)


def decide_rollback(
    stage: str,
    stack: Sequence[int | None],
    statuses: Mapping[int, VersionStatus],
    traffic_weight: int,
) -> Decision:
    """Return ``stage`` to the value it had before its last change.

    Going back past a clear points the stage at no version: refused, as a clear is, while the
    traffic policy sends it requests (the stored policy would route to nothing).
    """
    if len(stack) < 2:
        where = f"v{stack[-1]}" if stack and stack[-1] is not None else "no version"
        raise Refused(
            f"stage {stage} has no earlier version to roll back to (it points at {where} "
            f"and has {len(stack)} change(s) in its history)",
            hint="`reg history --stage STAGE` shows its timeline; `reg promote` sets it directly",
        )
    target = stack[-2]
    if target is None and traffic_weight > 0:
        raise Refused(
            f"stage {stage} would roll back to no version (it was cleared before v{stack[-1]}), "
            f"but it receives {traffic_weight}% of traffic",
            hint="set its weight to 0 with `reg traffic` first, or promote a version to it",
        )
    if target is not None and STAGE_ADMISSION[statuses[target]] is Admission.never:
        raise Refused(
            f"stage {stage} would roll back to v{target}, which is now "
            f"{statuses[target].value}",
            hint="promote a ready version to this stage instead",
        )
    return Decision(stage, StageAction.rollback, stack[-1], target)


def decide_clear(stage: str, stack: Sequence[int | None], traffic_weight: int) -> Decision:
    """Point ``stage`` at nothing; refused while the traffic policy sends it requests."""
    if traffic_weight > 0:
        raise Refused(
            f"stage {stage} receives {traffic_weight}% of traffic and cannot be cleared",
            hint="set its weight to 0 with `reg traffic` first",
        )
    return Decision(stage, StageAction.clear, current(stack), None)


def pointers_at(events: Iterable[StageChange], when: datetime) -> dict[str, int | None]:
    """Which version each stage pointed at, at time ``when`` (events oldest first)."""
    out: dict[str, int | None] = {}
    for e in events:
        if e.at <= when:
            out[e.stage] = e.to_version
    return out
