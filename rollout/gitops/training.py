"""Training dispatch: one model's run from start (or resume) to a registered version.

The steps, in order, each safe to repeat: :func:`begin_training` starts or resumes
the run -> an executor (:mod:`rollout.gitops.executor`: here, or on Ray) trains in
``$REG_HOME/runs/<run key>`` with checkpoints (a resumed run continues from its
newest complete one) -> :func:`finish_training` stores the artifact's blobs,
registers the version (``ready`` or ``rejected`` from the gates) and finishes the
run, in this process, whichever executor trained it. Any error becomes a ``failed``
run with the tail of its log and a retry time; it never escapes to stop the other
models. :func:`train_model` is the three for one model in this process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from recipes.training.tracking.client import tag_registered
from registry.versions import VersionStatus
from rollout.gitops.apply import Step, Steps
from rollout.gitops.executor import InProcessExecutor, TrainTask
from rollout.gitops.report import Outcome
from rollout.gitops.runlog import RunLog

if TYPE_CHECKING:
    from recipes.identity import SpecIdentity
    from recipes.loading.loader import LoadedRecipe
    from registry.tables import VersionPublic
    from rollout.gitops.plan import ModelPlan


class Trainer(Protocol):
    """``recipes.training.entry.train``'s shape; ``identity`` is the manifest's identity."""

    def __call__(self, loaded: LoadedRecipe, workdir: Path, *, resume: bool = ...,
                 progress: bool = ..., identity: dict[str, Any] | None = ...) -> Any: ...


def default_trainer(loaded: LoadedRecipe, workdir: Path, *, resume: bool = True,
                    progress: bool = True, identity: dict[str, Any] | None = None) -> Any:
    # Imported here: torch and transformers take seconds to import, and
    # `reg plan` or a no-op pass never needs them.
    from recipes.training.entry import train

    return train(loaded, workdir, resume=resume, progress=progress, identity=identity)


def manifest_identity(loaded: LoadedRecipe, ident: SpecIdentity) -> dict[str, Any]:
    """The identity the artifact records, carrying the spec hash this pass planned.

    If a data file changes between planning and training, the version is
    registered under the planned hash and the next pass sees the new hash and
    trains again: never a version whose hash nobody asked for.
    """
    from recipes.training.entry import default_identity

    out = {**default_identity(loaded), "spec_hash": ident.spec_hash,
           "data_digests": dict(ident.data_digests), "base_model": dict(ident.base_model)}
    if ident.reward_models:  # objective grpo: the reward model versions the plan pinned
        out["reward_models"] = [dict(p) for p in ident.reward_models]
    return out


def workdir_for(home: Path, run_key: str) -> Path:
    """``$REG_HOME/runs/<run key>``; the key is made of ``[a-z0-9-]`` only, so it cannot escape."""
    if not run_key or os.sep in run_key or run_key.startswith("."):
        raise ValueError(f"bad run key {run_key!r}")
    return home / "runs" / run_key


@dataclass(frozen=True)
class Trained:
    """What training one model came to: its outcome, and the version when one was registered."""

    outcome: Outcome
    version: VersionPublic | None = None

    @property
    def ready(self) -> bool:
        return self.version is not None and (
            VersionStatus(self.version.status) is VersionStatus.ready)


@dataclass
class Started:
    """A run begun in the registry, with the task an executor trains for it."""

    m: ModelPlan
    loaded: LoadedRecipe
    run_id: int
    runlog: RunLog
    task: TrainTask


def begin_training(steps: Steps, m: ModelPlan, loaded: LoadedRecipe, ident: SpecIdentity, *,
                   home: Path, progress: bool = False) -> Started | Trained:
    """Start (or resume) ``m``'s run and the task an executor trains (the executor fetches
    what the run reads: its reward models); a failure is a failed run."""
    assert m.run_key is not None and m.spec_hash is not None  # the planner sets both for train
    workdir = workdir_for(home, m.run_key)
    runlog = RunLog.in_workdir(workdir)
    steps.observer.step(m.model, "run", m.reason)
    run_id = steps.start_run(m, loaded, workdir).id
    runlog.write(f"run {run_id} ({m.run_key}) {'resumed' if m.resume else 'started'}: "
                 f"{m.reason}; spec {m.spec_hash}")
    steps.faults.after(Step.run_created, m.model)
    try:
        steps.registry.update_run(run_id, phase="train", actor=steps.actor)
        steps.observer.step(m.model, "train", str(workdir))
        identity = manifest_identity(loaded, ident)
    except Exception as e:
        return Trained(steps.fail_run(m, run_id, runlog, "train", e))
    task = TrainTask(m.run_key, loaded, workdir, identity,
                     tuple(dict(p) for p in ident.reward_models), progress)
    return Started(m, loaded, run_id, runlog, task)


def finish_training(steps: Steps, started: Started, result: Any) -> Trained:
    """Store and register what the executor trained (``result``, or the error that ended it)."""
    m, loaded, run_id, runlog = started.m, started.loaded, started.run_id, started.runlog
    registry, actor, faults = steps.registry, steps.actor, steps.faults
    phase = "train"
    try:
        if isinstance(result, BaseException):
            raise result
        artifact_dir = Path(result.artifact_dir)
        runlog.write(f"trained: artifact {artifact_dir}")
        for warning in getattr(result, "warnings", ()):  # a tracker lost (training.report_to)
            _tracking_warning(steps, m.model, runlog, warning)
        faults.after(Step.trained, m.model)

        phase = "register"
        registry.update_run(run_id, phase="register", actor=actor)
        steps.observer.step(m.model, "register", str(artifact_dir))
        # Blobs first (content-addressed, idempotent): a crash after this leaves
        # only unreferenced blobs, which the registration below reuses.
        digest, _, _ = registry.store.put_artifact(artifact_dir)
        runlog.write(f"artifact stored: {digest}")
        faults.after(Step.artifact_stored, m.model)
        git = m.git
        version = registry.register_artifact(
            artifact_dir, run_id=run_id, git_commit=git.commit if git else None,
            git_dirty=git.dirty if git else None, recipe_path=m.recipe_path, creator=actor,
            metadata=loaded.recipe.metadata)  # the recipe as it is now, not as it was trained
        runlog.write(f"registered {version.ref} ({version.status})")
        faults.after(Step.registered, m.model)
    except Exception as e:
        return Trained(steps.fail_run(m, run_id, runlog, phase, e))

    # After registration, outside the try: the MLflow run learns its version, or a warning
    # says it did not; either way the version stands.
    warning = tag_registered(artifact_dir, model=version.model, number=version.number,
                             digest=version.artifact_digest, status=str(version.status))
    if warning is not None:
        _tracking_warning(steps, m.model, runlog, warning)
    ready = VersionStatus(version.status) is VersionStatus.ready
    steps.finish_run(run_id, m.model, version.number, ready, runlog)
    return Trained(Outcome(m.model, m.action, "registered" if ready else "rejected",
                           version=version.number, run_id=run_id, trained=True), version)


def train_model(steps: Steps, m: ModelPlan, loaded: LoadedRecipe, ident: SpecIdentity, *,
                trainer: Trainer, home: Path, progress: bool = False) -> Trained:
    """Train, store and register ``m``'s spec hash in this process (one model, no executor)."""
    started = begin_training(steps, m, loaded, ident, home=home, progress=progress)
    if isinstance(started, Trained):
        return started
    [(_, result)] = list(InProcessExecutor(trainer, steps.registry.store).run([started.task]))
    return finish_training(steps, started, result)


def _tracking_warning(steps: Steps, model: str, runlog: RunLog, warning: str) -> None:
    """What a tracker did not record: in the run's log and on the console."""
    runlog.write(f"warning: {warning}")
    steps.observer.step(model, "tracking", f"warning: {warning}")
