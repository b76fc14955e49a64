"""Deploy actions: ``deploy.promote_to`` applied exactly once per registered spec hash.

The run records the action as ``pending`` before training and ``done``
after promoting, so a pass killed in between promotes nothing twice: the
planner sees the pending action (:attr:`Action.deploy`) and the next pass
only records what the stage already shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recipes.core.errors import RegError
from rollout.gitops.apply import Event, Step, Steps
from rollout.gitops.report import Outcome
from rollout.gitops.state import DeployState

if TYPE_CHECKING:
    from registry.tables import VersionPublic
    from rollout.gitops.plan import ModelPlan


def deploy(steps: Steps, model: str, version: VersionPublic, stage: str,
           recipe: str) -> str | None:
    """Point ``stage`` at ``version`` (once); returns an error message instead of raising."""
    steps.observer.step(model, "deploy", f"{version.ref} -> {stage}")
    try:
        if stage not in version.stages:
            steps.registry.promote(model, version.number, stage, actor=steps.actor,
                                   reason=f"deploy.promote_to in {recipe}")
        steps.faults.after(Step.deployed, model)
        _mark_deployed(steps, model, version.spec_hash)
    except RegError as e:
        steps.event(Event.deploy_failed, model, f"promote {version.ref} to {stage}: {e}",
                    version=version.number)
        return f"deploy: {e}"
    steps.event(Event.deployed, model, f"{version.ref} promoted to {stage}",
                version=version.number, data={"stage": stage})
    return None


def _mark_deployed(steps: Steps, model: str, spec_hash: str) -> None:
    for run in steps.registry.list_runs(model=model, spec_hash=spec_hash):
        if run.details.get("deploy") == DeployState.pending:
            steps.registry.update_run(run.id, details={**run.details, "deploy": DeployState.done},
                                      actor=steps.actor)


def deploy_registered(steps: Steps, m: ModelPlan) -> Outcome:
    """The deploy action of a version registered by an earlier, interrupted pass."""
    assert m.current_version is not None and m.promote_to is not None  # the planner sets both
    version = steps.registry.get_version(m.model, int(m.current_version.lstrip("v")))
    err = deploy(steps, m.model, version, m.promote_to, m.recipe_path or "")
    return Outcome(m.model, m.action, "failed" if err else "deployed",
                   version=version.number, error=err)
