"""Deploy actions: a new ready version's ``deploy.promote_to`` and ``deploy.rollout``,
applied exactly once per registered spec hash.

What they are is :func:`rollout.gitops.deploy_rules.deploy_steps`'s decision, taken
again here with production as it is when the reconciler acts (training may have taken
hours since the plan):

- ``promote``: point ``deploy.promote_to``'s stage at the version;
- ``rollout``: start a rollout of it against production's version
  (:class:`~rollout.canary.controller.RolloutCommands`, origin ``recipe``); an active
  rollout of an older version is superseded. The canary controller (inside `reg
  serve`, or `reg rollout run`) moves it from there;
- ``first``: nothing in production to compare with, so it is promoted there directly.

The run records the actions as ``pending`` before training and ``done`` after
applying them, so a pass killed in between applies nothing twice: the planner
sees the pending actions (:attr:`Action.deploy`) and the next pass only records
what the stages already show; starting a rollout that is already running returns it,
and one that was rolled back is not started again (the planner says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recipes.core.errors import RegError
from recipes.core.names import PRODUCTION
from rollout.gitops.apply import Event, Step, Steps
from rollout.gitops.deploy_rules import DeployKind, DeployStep, deploy_steps, describe_deploy
from rollout.gitops.report import Outcome
from rollout.gitops.state import DeployState

if TYPE_CHECKING:
    from recipes.loading.recipe import LoadedRecipe
    from registry.tables import VersionPublic
    from rollout.gitops.plan import ModelPlan


def deploy(steps: Steps, version: VersionPublic, loaded: LoadedRecipe) -> str | None:
    """Apply ``loaded``'s deploy actions to ``version`` (once); returns an error message
    instead of raising."""
    model, recipe = version.model, str(loaded.path)
    production = steps.registry.stage_map(model).get(PRODUCTION)
    current = None if production is None else production.number
    todo = deploy_steps(loaded.promote_to, loaded.rolls_out, version.number, current)
    said = describe_deploy(todo, version.number, current) or "nothing to do"
    steps.observer.step(model, "deploy", said)
    data: dict[str, object] = {"stage": loaded.promote_to, "actions": [s.kind.value for s in todo]}
    try:
        for s in todo:
            rollout = _apply(steps, version, s, loaded, recipe)
            if rollout is not None:
                data["rollout"] = rollout
        steps.faults.after(Step.deployed, model)
        _mark_deployed(steps, model, version.spec_hash)
    except RegError as e:
        steps.event(Event.deploy_failed, model, f"{said}: {e}", version=version.number,
                    data=data)
        return f"deploy: {e}"
    steps.event(Event.deployed, model, f"{version.ref}: {said}", version=version.number,
                data=data)
    return None


def _apply(steps: Steps, version: VersionPublic, s: DeployStep, loaded: LoadedRecipe,
           recipe: str) -> int | None:
    """One deploy action; returns the rollout's id when it started (or found) one."""
    model = version.model
    if s.kind is DeployKind.rollout:
        # Imported here: the controller brings the analysis, which a pass without a
        # rollout to start never needs.
        from rollout.canary.controller import RolloutCommands

        spec = loaded.recipe.spec.deploy.rollout
        assert spec is not None  # deploy_steps plans a rollout only for deploy.rollout
        row = RolloutCommands(steps.registry, clock=steps.clock).start(
            model, version.number, spec, origin="recipe", actor=steps.actor,
            reason=f"deploy.rollout in {recipe}")
        return row.id
    why = ("deploy.rollout: nothing in production to roll out against"
           if s.kind is DeployKind.first else "deploy.promote_to")
    if s.stage not in version.stages:
        steps.registry.promote(model, version.number, s.stage, actor=steps.actor,
                               reason=f"{why} in {recipe}")
    return None


def _mark_deployed(steps: Steps, model: str, spec_hash: str) -> None:
    for run in steps.registry.list_runs(model=model, spec_hash=spec_hash):
        if run.details.get("deploy") == DeployState.pending:
            steps.registry.update_run(run.id, details={**run.details, "deploy": DeployState.done},
                                      actor=steps.actor)


def deploy_registered(steps: Steps, m: ModelPlan, loaded: LoadedRecipe) -> Outcome:
    """The deploy actions of a version registered by an earlier, interrupted pass."""
    assert m.current_version is not None  # the planner sets it for deploy
    version = steps.registry.get_version(m.model, int(m.current_version.lstrip("v")))
    err = deploy(steps, version, loaded)
    return Outcome(m.model, m.action, "failed" if err else "deployed",
                   version=version.number, error=err)
