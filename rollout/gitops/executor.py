"""Where training runs: the executor interface, the in-process default, and the choice.

The reconciler hands an executor its training tasks as a lazy iterable and gets back
``(task, result or error)`` pairs; every registry write stays in the reconciler's
process (:mod:`rollout.gitops.training`), the executor only trains:

1. :class:`InProcessExecutor` (the default) pulls one task, trains it here, hands back
   the result, and pulls the next only when the reconciler has registered that one: one
   run at a time, exactly as before executors existed;
2. :class:`~rollout.gitops.ray_executor.RayExecutor` (``REG_TRAINING_EXECUTOR=ray``)
   pulls every task at once, submits each as a Ray task with the recipe's
   ``training.resources``, and hands results back as they finish.

``training.resources`` is read by both: Ray requests it; in process, a run this machine
cannot meet is refused before training (:func:`unmet_resources`, pure).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from recipes.core.errors import Problem, RegError, ValidationFailed
from rollout.gitops.runlog import RunLog

if TYPE_CHECKING:
    from recipes.loading.loader import LoadedRecipe
    from recipes.schema.training import TrainingResources
    from registry.api import Registry
    from registry.store import ArtifactStore
    from rollout.gitops.training import Trainer

EXECUTOR_ENV = "REG_TRAINING_EXECUTOR"
RAY_ADDRESS_ENV = "RAY_ADDRESS"
EXECUTORS = ("in-process", "ray")


class BadExecutor(RegError):
    """``$REG_TRAINING_EXECUTOR`` names no executor."""


@dataclass(frozen=True)
class TrainTask:
    """One run to train: what the trainer reads, and where its files go on this machine."""

    run_key: str
    loaded: LoadedRecipe
    workdir: Path
    identity: dict[str, Any]  # the manifest identity, with the spec hash the plan chose
    reward_models: tuple[dict[str, Any], ...] = ()  # objective grpo: pinned artifacts
    progress: bool = False


class TrainingExecutor(Protocol):
    """Trains tasks; yields each with the trainer's result (``artifact_dir``, ``warnings``)
    or the exception that ended it. Never writes the registry."""

    def run(self, tasks: Iterable[TrainTask]) -> Iterator[tuple[TrainTask, Any]]: ...


# ---- resources: what a run asks against what a machine has -------------------------------


@dataclass(frozen=True)
class Capacity:
    """What one machine (or the largest node of a cluster) offers."""

    cpus: float
    gpus: float
    memory: int  # bytes


def unmet_resources(want: TrainingResources | None, have: Capacity) -> list[tuple[str, str]]:
    """(field under ``training.resources``, what is short) for each unmet request. Pure."""
    if want is None:
        return []
    out: list[tuple[str, str]] = []
    if want.cpus is not None and want.cpus > have.cpus:
        out.append(("cpus", f"asks for {want.cpus:g} CPUs; the most on offer is {have.cpus:g}"))
    if want.gpus is not None and want.gpus > have.gpus:
        out.append(("gpus", f"asks for {want.gpus:g} GPUs; the most on offer is {have.gpus:g}"))
    need = want.memory_bytes
    if need is not None and need > have.memory:
        out.append(("memory", f"asks for {need / 2**30:.1f} GiB of memory; the most on offer "
                    f"is {have.memory / 2**30:.1f} GiB"))
    return out


def machine_capacity() -> Capacity:
    """This machine: the CPUs this process may use, its CUDA devices, its physical memory."""
    import torch  # training imports it anyway; only a run that asks for resources gets here

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Capacity(float(cpus or 1), float(gpus), int(memory))


def resources_refused(loaded: LoadedRecipe, short: list[tuple[str, str]], where: str,
                      fix: str) -> ValidationFailed:
    """The error naming the recipe's file, line and field for each unmet request."""
    from recipes.loading.parse import parse_yaml, position

    doc, _ = parse_yaml(loaded.path, loaded.text)
    problems = []
    for name, message in short:
        line, col = position(doc, ("spec", "training", "resources", name))
        problems.append(Problem(str(loaded.path), line, col, f"spec.training.resources.{name}",
                                f"{message} {where}", hint=fix))
    return ValidationFailed(problems)


def check_in_process(loaded: LoadedRecipe, have: Capacity | None = None) -> None:
    """Refuse, before training, a run whose ``training.resources`` this machine cannot meet."""
    want = loaded.recipe.spec.training.resources
    if want is None:
        return
    short = unmet_resources(want, have or machine_capacity())
    if short:
        raise resources_refused(
            loaded, short, "on this machine (in-process training)",
            f"lower it, or train on a cluster that has it: {EXECUTOR_ENV}=ray with "
            f"{RAY_ADDRESS_ENV} (docs/scale.md)")


# ---- the in-process executor ------------------------------------------------------------


class InProcessExecutor:
    """Trains each task in this process, one at a time, pulling the next only after the
    reconciler has dealt with the last (today's order of runs, events and writes)."""

    def __init__(self, trainer: Trainer, store: ArtifactStore | None = None) -> None:
        self.trainer = trainer
        self.store = store  # where a GRPO run's pinned reward models are fetched from

    def run(self, tasks: Iterable[TrainTask]) -> Iterator[tuple[TrainTask, Any]]:
        from rollout.gitops.reward_pins import fetch_pins

        for task in tasks:
            try:
                check_in_process(task.loaded)
                if task.reward_models:
                    if self.store is None:
                        raise RuntimeError("this executor was given no artifact store to "
                                           "fetch the run's reward models from")
                    fetch_pins(self.store, task.reward_models, task.workdir)
                with RunLog.in_workdir(task.workdir).capture():
                    result: Any = self.trainer(task.loaded, task.workdir, resume=True,
                                               progress=task.progress, identity=task.identity)
            except Exception as e:  # becomes the failed run's error in the reconciler
                result = e
            yield task, result


def executor_from_env(registry: Registry, trainer: Trainer | None = None,
                      env: Mapping[str, str] | None = None) -> TrainingExecutor:
    """``$REG_TRAINING_EXECUTOR``: ``in-process`` (default) or ``ray`` (at ``$RAY_ADDRESS``)."""
    from rollout.gitops.training import default_trainer

    env = os.environ if env is None else env
    name = (env.get(EXECUTOR_ENV) or "in-process").strip()
    if name == "in-process":
        return InProcessExecutor(trainer or default_trainer, registry.store)
    if name == "ray":
        from rollout.gitops.ray_executor import RayExecutor

        return RayExecutor(registry.settings.artifact_store, address=env.get(RAY_ADDRESS_ENV))
    raise BadExecutor(f"{EXECUTOR_ENV}={name!r} is not a training executor",
                      hint=f"use one of {', '.join(EXECUTORS)} (or leave it unset)")
