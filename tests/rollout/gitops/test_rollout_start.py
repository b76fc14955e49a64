"""``deploy.rollout`` as the reconciler's deploy action: a new ready version rolls out against
production by itself (the first one is promoted directly), a newer one supersedes it, and a
version whose rollout was rolled back is not rolled out again by the next reconcile.

The planner's part is pure (hand-built snapshots); the reconciler's is end to end: real
training on the tiny model, a real registry, `reg plan` as a real subprocess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recipes.core.names import CANARY, PRODUCTION
from registry.settings import Settings
from rollout.canary.controller import CanaryController
from rollout.canary.records import RequestLog
from rollout.gitops.deploy_rules import DeployKind, deploy_steps
from rollout.gitops.plan import Action, make_plan
from rollout.gitops.reconciler import Reconciler
from rollout.gitops.state import DesiredModel, VersionSnapshot
from tests.support.cli import git, run_reg
from tests.support.factories import RegistryFactory, WorkspaceFactory

MODEL = "support-bot"
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
H1, H2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
ROLLOUT = ("    rollout:\n      steps: [{weight: 10}, {weight: 50}, {weight: 100}]\n"
           "      interval: 10s\n      min_requests: 20\n")


# -- the decision (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(("promote_to", "rolls_out", "production", "kinds"), [
    pytest.param(None, True, 1, [DeployKind.rollout], id="rollout-against-production"),
    pytest.param(None, True, None, [DeployKind.first], id="first-version-promoted"),
    pytest.param(None, True, 2, [], id="already-in-production"),
    pytest.param("staging", True, 1, [DeployKind.promote, DeployKind.rollout],
                 id="promote-to-staging-then-rollout"),
    pytest.param("production", True, 1, [DeployKind.rollout], id="rollout-owns-production"),
    pytest.param("canary", True, 1, [DeployKind.rollout], id="rollout-owns-canary"),
    pytest.param("production", False, 1, [DeployKind.promote], id="promote-only"),
])
def test_deploy_steps(promote_to: str | None, rolls_out: bool, production: int | None,
                      kinds: list[DeployKind]) -> None:
    assert [s.kind for s in deploy_steps(promote_to, rolls_out, 2, production)] == kinds


def desired(*, rolls_out: bool = True) -> DesiredModel:
    return DesiredModel(name="bot", recipe_path="/ws/recipes/bot.yaml", spec_hash=H2,
                        normalized_spec={}, data_digests={}, base_model={}, rolls_out=rolls_out)


def version(number: int, spec_hash: str, *, stages: tuple[str, ...] = (),
            deploy_done: bool = True, rollout_ended: str | None = None) -> VersionSnapshot:
    return VersionSnapshot(model="bot", version=number, spec_hash=spec_hash, status="ready",
                           created_at=NOW - timedelta(days=1), stages=stages,
                           deploy_done=deploy_done, rollout_ended=rollout_ended)


def test_the_plan_names_the_rollout_a_new_version_gets() -> None:
    plan = make_plan([desired()], [], [version(1, H1, stages=(PRODUCTION,))], [],
                     now=NOW)
    (m,) = plan.models
    assert (m.action, m.deploy) == (Action.train, "rollout v2 against production v1")
    assert m.reason == "spec changed since v1; then rollout v2 against production v1"
    assert plan.as_json()["models"][0]["deploy"] == "rollout v2 against production v1"


def test_the_plan_says_the_first_version_is_promoted_directly() -> None:
    (m,) = make_plan([desired()], [], [], [], now=NOW).models
    assert m.deploy is not None and m.deploy.startswith("promote v1 to production (nothing "
                                                        "in production to roll out against")


def test_a_pending_rollout_is_planned_as_the_deploy_action() -> None:
    versions = [version(1, H1, stages=(PRODUCTION,)), version(2, H2, deploy_done=False)]
    (m,) = make_plan([desired()], [], versions, [], now=NOW).models
    assert (m.action, m.deploy) == (Action.deploy, "rollout v2 against production v1")


@pytest.mark.parametrize("ended", ["rolled_back", "aborted"])
def test_a_version_whose_rollout_ended_badly_is_not_planned_again(ended: str) -> None:
    versions = [version(1, H1, stages=(PRODUCTION,)),
                version(2, H2, deploy_done=False, rollout_ended=ended)]
    (m,) = make_plan([desired()], [], versions, [], now=NOW).models
    assert m.action is Action.in_sync
    assert f"its rollout was {ended}, so it is not started again" in m.reason
    assert "`reg rollout start bot v2` retries it" in m.reason


# -- the reconciler, end to end (real training) ------------------------------------------------


def fast(text: str, *, steps: int = 6) -> str:
    """Seconds of training, and deploy.rollout in the recipe."""
    for old, new in (("max_steps: 250", f"max_steps: {steps}"),
                     ("generation_examples: 8", "generation_examples: 1"),
                     ("max_examples: 32", "max_examples: 4"),
                     ("  deploy:\n    target: vllm\n", "  deploy:\n    target: vllm\n" + ROLLOUT)):
        text = text.replace(old, new)
    assert "rollout:" in text
    return text


def retrain(recipe: Path, ws: Path, steps: int) -> None:
    """A committed recipe change that trains a new version: ``max_steps`` set to ``steps``."""
    text = re.sub(r"max_steps: \d+", f"max_steps: {steps}", recipe.read_text(), count=1)
    recipe.write_text(text)
    git(ws, "commit", "-qam", f"train {steps} steps")


@dataclass
class Probes:
    """The identity check, answering what the test says the engine serves."""

    mismatch: dict[int, str] = field(default_factory=dict)

    def verify(self, model: str, version: int) -> tuple[bool, str]:
        if version in self.mismatch:
            return False, self.mismatch[version]
        return True, "probe answers equal"


def plan_of(settings: Settings, recipes: str) -> dict[str, object]:
    cp = run_reg(settings, "plan", recipes, "--json")
    assert cp.returncode in (0, 2), cp.stdout + cp.stderr
    (m,) = json.loads(cp.stdout)["models"]
    assert isinstance(m, dict)
    return m


@pytest.mark.slow
def test_a_changed_recipe_with_deploy_rollout_starts_a_rollout_by_itself(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory
) -> None:
    ws = workspace(keep=(MODEL,), edit={MODEL: fast})
    recipes, recipe = ws / "recipes", ws / "recipes" / f"{MODEL}.yaml"
    first = plan_of(sqlite_settings, str(recipes))
    assert str(first["deploy"]).startswith("promote v1 to production (nothing in production")

    reg = open_registry(sqlite_settings)
    rec = Reconciler(reg, [recipes])
    report = rec.run_once()
    assert [(o.model, o.result, o.version, o.error) for o in report.outcomes] == [
        (MODEL, "registered", 1, None)]
    assert reg.stage_map(MODEL)[PRODUCTION].number == 1
    assert reg.list_rollouts(MODEL) == []
    (deployed,) = [e for e in reg.events(model=MODEL) if e.kind == "reconcile.deployed"]
    assert "nothing in production to roll out against" in deployed.message

    retrain(recipe, ws, 7)
    planned = plan_of(sqlite_settings, str(recipes))
    assert (planned["action"], planned["deploy"]) == ("train", "rollout v2 against production v1")
    human = run_reg(sqlite_settings, "plan", str(recipes))
    assert "rollout v2 against production v1" in " ".join(human.stdout.split())

    report = rec.run_once()
    assert [(o.result, o.version, o.error) for o in report.outcomes] == [("registered", 2, None)]
    (r,) = reg.list_rollouts(MODEL)
    assert (r.candidate, r.baseline, r.phase, r.active, r.origin, r.actor) == (
        2, 1, "pending", True, "recipe", "reconciler")
    assert [s["weight"] for s in r.plan["steps"]] == [10, 50, 100]
    assert r.plan["min_requests"] == 20
    assert reg.stage_map(MODEL)[PRODUCTION].number == 1  # the rollout decides, not the reconciler
    assert rec.run_once().outcomes == []  # deployed once: the next pass starts nothing

    # A newer version supersedes the running rollout; it starts from the first step.
    retrain(recipe, ws, 8)
    rec.run_once()
    newest, older = reg.list_rollouts(MODEL)
    assert (older.candidate, older.phase, older.reason) == (2, "aborted",
                                                            "aborted: superseded by v3")
    assert (newest.candidate, newest.baseline, newest.phase, newest.step) == (3, 1, "pending", -1)


@pytest.mark.slow
def test_a_rolled_back_version_is_not_rolled_out_again_by_the_next_reconcile(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory
) -> None:
    ws = workspace(keep=(MODEL,), edit={MODEL: fast})
    recipes, recipe = ws / "recipes", ws / "recipes" / f"{MODEL}.yaml"
    reg = open_registry(sqlite_settings)
    Reconciler(reg, [recipes]).run_once()
    retrain(recipe, ws, 7)

    # The pass dies right after starting the rollout, before recording its deploy as done.
    killed = run_reg(sqlite_settings, "reconcile", str(recipes), "--once",
                     REG_FAULT="after:deployed")
    assert killed.returncode == 137, killed.stdout + killed.stderr
    (r,) = reg.list_rollouts(MODEL, active=True)
    assert r.candidate == 2
    planned = plan_of(sqlite_settings, str(recipes))
    assert (planned["action"], planned["deploy"]) == ("deploy", "rollout v2 against production v1")

    # The engine does not serve v2's weights: the controller rolls it back.
    controller = CanaryController(reg, RequestLog(), Probes({2: "probe 1: 'x' != 'y'"}))
    controller.run_once()  # pending -> verifying
    controller.run_once()  # verifying -> rolled back
    assert reg.get_rollout(r.id).phase == "rolled_back"
    assert CANARY not in reg.stage_map(MODEL)

    planned = plan_of(sqlite_settings, str(recipes))
    assert planned["action"] == "in_sync"
    assert "its rollout was rolled_back, so it is not started again" in str(planned["reason"])
    report = Reconciler(reg, [recipes]).run_once()
    assert report.outcomes == []
    assert [(x.candidate, x.phase) for x in reg.list_rollouts(MODEL)] == [(2, "rolled_back")]

    # A person may still start it again.
    cp = run_reg(sqlite_settings, "rollout", "start", MODEL, "v2", "--reason", "fixed engine")
    assert cp.returncode == 0, cp.stderr
    latest = reg.list_rollouts(MODEL, limit=1)[0]
    assert (latest.candidate, latest.phase, latest.origin) == (2, "pending", "manual")

