"""Training runs: the reconciler's record of each attempt to turn a spec hash into a version.

Statuses and their allowed changes sit in one table (pure: ``registry.api.runs``
reads and writes the rows); the reconciler owns the phases (free text such as
``data``, ``train``, ``evaluate``, ``register``).
"""

from __future__ import annotations

from enum import StrEnum

from registry.errors import Refused


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
