"""The bookkeeping steps of applying a plan: a run started, resumed, finished, failed or
cancelled, a version archived; each writes through the registry facade and records its event.

:class:`Steps` carries what every step needs (the registry, who acts, the
clock, the progress observer, the fault points, the retry policy);
:mod:`rollout.gitops.training` and :mod:`rollout.gitops.deploy` are built on
it, and :class:`~rollout.gitops.reconciler.Reconciler` runs them in order.
Every step is safe to repeat: a pass killed right after any of them (the
points of :class:`Step`) is repaired by the next.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.core.errors import RegError
from registry.versions import VersionStatus
from rollout.controller.faults import NO_FAULTS, FaultPoints
from rollout.gitops.plan import Action, BackoffPolicy, ModelPlan
from rollout.gitops.report import Observer, Outcome, QuietObserver
from rollout.gitops.runlog import RunLog
from rollout.gitops.state import DeployState

if TYPE_CHECKING:
    from recipes.loading.loader import LoadedRecipe
    from registry.api import Registry
    from registry.tables import RunPublic, VersionPublic

log = logging.getLogger("reg.reconcile")


class Step(StrEnum):
    """The points right after a step that changes the world: where crash tests kill a pass."""

    run_created = "run_created"
    trained = "trained"
    artifact_stored = "artifact_stored"
    registered = "registered"
    run_finished = "run_finished"
    deployed = "deployed"


STEPS: tuple[str, ...] = tuple(s.value for s in Step)


class Event(StrEnum):
    """The event kinds the reconciler records (the registry records its own as well)."""

    run_started = "reconcile.run_started"
    run_resumed = "reconcile.run_resumed"
    run_cancelled = "reconcile.run_cancelled"
    registered = "reconcile.registered"
    rejected = "reconcile.rejected"
    failed = "reconcile.failed"
    deployed = "reconcile.deployed"
    deploy_failed = "reconcile.deploy_failed"
    pass_failed = "reconcile.pass_failed"
    store_swept = "reconcile.store_swept"


@dataclass
class Steps:
    """What each step of a pass needs, and the steps that only keep books."""

    registry: Registry
    actor: str
    clock: Callable[[], datetime]
    policy: BackoffPolicy
    observer: Observer = field(default_factory=QuietObserver)
    faults: FaultPoints = NO_FAULTS

    def event(self, kind: Event, model: str | None, message: str, *, run_id: int | None = None,
              version: int | None = None, data: dict[str, Any] | None = None) -> None:
        self.registry.record_event(kind, actor=self.actor, model=model, run_id=run_id,
                                   version=version, message=message, data=data)

    def start_run(self, m: ModelPlan, loaded: LoadedRecipe, workdir: Path) -> RunPublic:
        """Create the run of this attempt, or mark the interrupted one as resumed."""
        if m.resume and m.run_id is not None:
            run = self.registry.update_run(int(m.run_id), status="training", phase="resume",
                                           actor=self.actor)
            self.event(Event.run_resumed, m.model, f"resuming run {run.id} in {workdir}",
                       run_id=run.id)
            return run
        git = m.git
        deploy = (DeployState.pending if loaded.promote_to or loaded.rolls_out
                  else DeployState.none)
        run = self.registry.create_run(
            m.model, m.spec_hash or "", status="training", phase="start", workdir=str(workdir),
            recipe_path=m.recipe_path, git_commit=git.commit if git else None,
            git_dirty=git.dirty if git else None, creator=self.actor, attempts=m.attempt,
            details={"deploy": deploy, "run_key": m.run_key, "promote_to": loaded.promote_to,
                     "rollout": loaded.rolls_out})
        self.event(Event.run_started, m.model, f"run {run.id}: {m.reason} (attempt {m.attempt})",
                   run_id=run.id, data={"spec_hash": m.spec_hash, "attempt": m.attempt,
                                        "diff": m.diff is not None and not m.diff.empty})
        return run

    def finish_run(self, run_id: int, model: str, number: int, ready: bool,
                   runlog: RunLog | None = None) -> None:
        """Mark a run done with the version it registered (repeatable)."""
        if runlog is None:
            run = self.registry.get_run(run_id)
            runlog = RunLog.in_workdir(Path(run.workdir)) if run.workdir else None
        self.registry.update_run(run_id, status="succeeded" if ready else "rejected",
                                 phase="done", version_number=number, finished_at=self.clock(),
                                 log_tail=runlog.tail() if runlog else "", error="",
                                 actor=self.actor)
        version = self.registry.get_version(model, number)
        self.event(Event.registered if ready else Event.rejected, model,
                   f"{version.ref} {version.status}"
                   + ("" if ready else f": gates failed {failed_gates(version)}"),
                   run_id=run_id, version=number,
                   data={"spec_hash": version.spec_hash, "gates_passed": version.gates_passed})
        self.faults.after(Step.run_finished, model)

    def cancel_run(self, run_id: int, reason: str) -> None:
        run = self.registry.update_run(run_id, status="cancelled", error=f"cancelled: {reason}",
                                       finished_at=self.clock(), actor=self.actor)
        self.event(Event.run_cancelled, run.model, f"run {run_id} cancelled: {reason}",
                   run_id=run_id)

    def fail_run(self, m: ModelPlan, run_id: int, runlog: RunLog, phase: str,
                 e: BaseException) -> Outcome:
        """Record a failed attempt with its log tail and when to retry (or that it is blocked)."""
        message = f"{type(e).__name__}: {e}"
        hint = getattr(e, "hint", None)
        if hint:
            message += f" (hint: {hint})"
        runlog.write(f"FAILED in {phase}: {message}")
        runlog.write("".join(traceback.format_exception(e)))
        failures = m.failures + 1
        now = self.clock()
        nxt = None if self.policy.exhausted(failures) else self.policy.next_retry_at(failures, now)
        self.registry.update_run(run_id, status="failed", phase=phase, error=message,
                                 log_tail=runlog.tail(), finished_at=now, next_retry_at=nxt,
                                 actor=self.actor)
        self.event(Event.failed, m.model,
                   f"run {run_id} failed in {phase}: {message}"
                   + (f"; retry after {nxt.isoformat(timespec='seconds')}" if nxt else
                      f"; retry limit {self.policy.max_attempts} reached"),
                   run_id=run_id, data={"phase": phase, "attempt": m.attempt})
        log.warning("%s: run %s failed in %s: %s", m.model, run_id, phase, message)
        return Outcome(m.model, m.action, "failed", run_id=run_id, error=message)

    def archive(self, model: str, number: int, reason: str) -> Outcome:
        """``--prune``: archive a version of an orphaned model."""
        try:
            self.registry.set_version_status(model, number, VersionStatus.archived,
                                             actor=self.actor, reason=f"prune: {reason}")
        except RegError as e:  # e.g. promoted since the plan was made
            return Outcome(model, Action.orphaned, "skipped", version=number, error=str(e))
        return Outcome(model, Action.orphaned, "archived", version=number)


def failed_gates(version: VersionPublic) -> str:
    """``max_perplexity=41.2 (threshold 20.0)`` for each failed gate."""
    from recipes.evaluation.report import EvaluationReport, ReportError

    try:
        report = EvaluationReport.parse(version.metrics)
    except ReportError:
        return "(see `reg show`)"
    return ", ".join(f"{g.gate}={g.value} (threshold {g.threshold})"
                     for g in report.gates if not g.passed) or "(see `reg show`)"
