"""The reconciler: makes the registry follow the recipes, one pass at a time.

One pass (:meth:`Reconciler.run_once`):

1. take the registry's ``reconciler`` lease (:func:`rollout.controller.lease.hold_lease`:
   a heartbeat keeps it; a dead local holder's is reclaimed at once), and (at the first
   pass, then every ten minutes) sweep the artifact store of temp files that writers
   killed mid-write left;
2. read desired state (the one recipe loader, with its cache; a GRPO recipe's reward
   models pinned to versions, :mod:`rollout.gitops.reward_pins`) and actual
   state (the registry), and decide with :func:`~rollout.gitops.plan.make_plan` (pure);
3. close runs whose spec hash is no longer wanted (:mod:`rollout.gitops.apply`);
4. for each model whose action is due, in order: start its run and hand it to the
   training executor (:mod:`rollout.gitops.executor`: in this process one at a time,
   or on Ray all at once); as each run comes back, register it
   (:mod:`rollout.gitops.training`, here: the only writer of the registry), then apply
   its deploy actions (:mod:`rollout.gitops.deploy`: ``deploy.promote_to``'s stage;
   with ``deploy.rollout``, a rollout against production, which the canary controller
   runs); a failure becomes a ``failed`` run and the next model goes on;
5. archive what ``--prune`` decided; release the lease.

Every step is safe to repeat, so a pass killed at any moment is repaired by
the next: an interrupted run is resumed in its workdir; training returns a
finished artifact at once; the artifact store is content-addressed; the
version is unique per (model, spec hash) and registering is idempotent; the
deploy action is recorded as pending on the run before registration and done
after it, so it runs exactly once even across a kill. ``--watch`` repeats
passes with :func:`rollout.controller.loop.watch`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from recipes.loading.cache import LoadCache
from registry.lease import local_holder
from rollout.controller import loop
from rollout.controller.faults import NO_FAULTS, FaultPoints
from rollout.controller.lease import DEFAULT_TTL_S, hold_lease
from rollout.gitops.actual import snapshot
from rollout.gitops.apply import Event, Steps
from rollout.gitops.deploy import deploy, deploy_registered
from rollout.gitops.desired import DesiredState, desired_state
from rollout.gitops.executor import InProcessExecutor, TrainingExecutor, TrainTask
from rollout.gitops.gitinfo import GitLineage
from rollout.gitops.plan import Action, BackoffPolicy, Plan, make_plan
from rollout.gitops.report import Observer, Outcome, PassReport, QuietObserver
from rollout.gitops.reward_pins import pin_reward_models
from rollout.gitops.training import (
    Started,
    Trained,
    Trainer,
    begin_training,
    default_trainer,
    finish_training,
)

if TYPE_CHECKING:
    from registry.api import Registry

LEASE_NAME = "reconciler"
SWEEP_INTERVAL_S = 600.0
ACTOR = "reconciler"


class Reconciler:
    """Makes the registry follow the recipes under ``paths``.

    Everything with a side effect comes in: the trainer (or the executor that runs
    it: in process by default, :func:`~rollout.gitops.executor.executor_from_env`
    picks Ray), the clock, the
    fault points, the loader's cache (``$REG_HOME/cache`` by default). The
    process that builds it decides their settings (``reg reconcile`` reads
    the environment); nothing here does.
    """

    def __init__(
        self,
        registry: Registry,
        paths: Sequence[Path],
        *,
        trainer: Trainer | None = None,
        executor: TrainingExecutor | None = None,
        policy: BackoffPolicy | None = None,
        observer: Observer | None = None,
        progress: bool = False,
        actor: str = ACTOR,
        holder: str | None = None,
        lease_ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], datetime] | None = None,
        faults: FaultPoints = NO_FAULTS,
        cache: LoadCache | None = None,
    ) -> None:
        self.registry = registry
        self.paths = list(paths)
        self.trainer: Trainer = trainer or default_trainer
        self.executor: TrainingExecutor = executor or InProcessExecutor(self.trainer,
                                                                        registry.store)
        self.progress = progress
        self.holder = holder or local_holder()
        self.lease_ttl_s = lease_ttl_s
        self.home = registry.settings.home
        self.cache = cache or LoadCache.under(self.home / "cache")
        self._swept_at: float | None = None
        self.steps = Steps(registry, actor, clock or registry.clock, policy or BackoffPolicy(),
                           observer or QuietObserver(), faults)

    def _sweep_store(self) -> None:
        """Remove the temp files of store writers killed mid-write: at this process's first
        pass (a killed reconciler's are found by the next one to start), then at most every
        ``SWEEP_INTERVAL_S`` (a killed `reg register`'s, under ``--watch``). Not every pass:
        the sweep lists every blob, work a no-op pass need not repeat."""
        now = time.monotonic()
        if self._swept_at is not None and now - self._swept_at < SWEEP_INTERVAL_S:
            return
        self._swept_at = now
        swept = self.registry.store.sweep()
        if swept:
            self.steps.event(Event.store_swept, None, f"removed {len(swept)} half-written "
                             "file(s) from the artifact store", data={"keys": swept})

    # -- deciding --------------------------------------------------------------------------------

    def plan(self, *, prune: bool = False) -> tuple[Plan, DesiredState]:
        """Read both states and decide; writes to no registry table (``reg plan`` is this)."""
        state = desired_state(self.paths, GitLineage(), self.cache)
        pin_reward_models(state, self.registry)  # objective grpo: reward model versions
        versions, runs = snapshot(self.registry, state.desired)
        plan = make_plan(state.desired, state.blocked, versions, runs, now=self.steps.clock(),
                         policy=self.steps.policy, prune=prune)
        return plan, state

    # -- doing -----------------------------------------------------------------------------------

    def run_once(self, *, prune: bool = False, wait_lease_s: float = 0.0) -> PassReport:
        """One reconcile pass under the lease. Failures of one model never stop the others."""
        started = time.monotonic()
        steps = self.steps
        with hold_lease(self.registry.leases, LEASE_NAME, self.holder, ttl_s=self.lease_ttl_s,
                        wait_s=wait_lease_s) as hb:
            self._sweep_store()
            plan, state = self.plan(prune=prune)
            steps.observer.planned(plan)
            report = PassReport(plan)
            for stale in plan.stale_runs:
                if stale.version is not None:
                    steps.finish_run(int(stale.run_id), stale.model, stale.version,
                                     stale.version_status == "ready")
                else:
                    steps.cancel_run(int(stale.run_id), stale.reason)
            in_flight: dict[str, tuple[Started, float]] = {}

            def tasks() -> Iterator[TrainTask]:
                # Pulled lazily by the executor: in process, the next model starts only
                # after the last one was registered and deployed, as it always did.
                for m in plan.models:
                    if hb.lost:
                        return  # another reconciler owns the registry now; it will carry on
                    if not m.actionable:
                        continue
                    t0 = time.monotonic()
                    loaded = state.loaded[m.model]
                    if m.action is Action.deploy:
                        self._record(report, deploy_registered(steps, m, loaded), t0)
                        continue
                    begun = begin_training(steps, m, loaded, state.identities[m.model],
                                           home=self.home, progress=self.progress)
                    if isinstance(begun, Trained):
                        self._record(report, begun.outcome, t0)
                        continue
                    in_flight[begun.task.run_key] = (begun, t0)
                    yield begun.task

            for task, result in self.executor.run(tasks()):
                begun, t0 = in_flight.pop(task.run_key)
                self._record(report, self._registered(begun, result), t0)
            for p in plan.prune:
                report.outcomes.append(steps.archive(p.model, int(p.version.lstrip("v")),
                                                     p.reason))
        report.seconds = time.monotonic() - started
        return report

    def _registered(self, begun: Started, result: object) -> Outcome:
        """Register what the executor trained, then deploy what this pass registered."""
        trained = finish_training(self.steps, begun, result)
        loaded = begun.loaded
        if trained.ready and trained.version is not None and (
                loaded.promote_to or loaded.rolls_out):
            trained.outcome.error = deploy(self.steps, trained.version, loaded)
        return trained.outcome

    def _record(self, report: PassReport, outcome: Outcome, t0: float) -> None:
        outcome.seconds = time.monotonic() - t0
        self.steps.observer.finished(outcome)
        report.outcomes.append(outcome)

    def watch(self, interval_s: float, stop: threading.Event, *, prune: bool = False,
              on_pass: Callable[[PassReport | None, BaseException | None], None] | None = None,
              ) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set. A held lease means standby;
        a failed pass is recorded as an event and retried after a backoff."""
        loop.watch(lambda: self.run_once(prune=prune), stop, interval_s=interval_s,
                   on_pass=on_pass, record_error=self._record_pass_error)

    def _record_pass_error(self, e: BaseException) -> None:
        self.steps.event(Event.pass_failed, None, f"reconcile pass failed: "
                         f"{type(e).__name__}: {e}", data={"paths": [str(p) for p in self.paths]})
