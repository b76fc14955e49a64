"""Stored rollouts: start, compare-and-set advances, effects in the same transaction.

Real SQLite and PostgreSQL (the ``db_url`` fixture); the phases themselves are the
controller's (rollout.canary) and are passed here as the strings it stores.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from recipes.core.errors import RegError
from registry.api import Registry, RolloutChange
from registry.errors import Refused
from registry.rollouts import StaleRollout, canary_weights
from tests.support.factories import ArtifactFactory, RegistryFactory

PLAN = {"steps": [{"weight": 5}, {"weight": 50}]}
T = datetime(2026, 1, 1, tzinfo=UTC)


def three_versions(registry: Registry, make_artifact: ArtifactFactory) -> None:
    for _ in range(3):
        registry.register_artifact(make_artifact("support-bot"))
    registry.promote("support-bot", 1, "production")
    registry.promote("support-bot", 2, "canary")  # what the canary held before the rollout


def change(revision: int, phase: str, **kw: object) -> RolloutChange:
    base: dict[str, object] = {"expected_revision": revision, "phase": phase, "active": True,
                               "step": 0, "weight": 0, "failures": 0, "step_started_at": T,
                               "reason": phase, "event": "rollout.step"}
    base.update(kw)
    return RolloutChange(**base)  # type: ignore[arg-type]


def test_a_rollout_moves_the_canary_and_promotes_in_its_transactions(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    three_versions(registry, make_artifact)
    r = registry.start_rollout("support-bot", 3, PLAN, origin="recipe", actor="ctl")
    assert (r.phase, r.baseline, r.previous_canary, r.revision) == ("pending", 1, 2, 1)
    r = registry.advance_rollout(r.id, change(1, "verifying", canary_weight=0,
                                              stages=[("canary", 3)]))
    assert registry.stage_map("support-bot")["canary"].number == 3
    r = registry.advance_rollout(r.id, change(2, "progressing", weight=5, canary_weight=5))
    policy = registry.get_traffic("support-bot")
    assert policy is not None and dict(policy.weights) == {"production": 95, "canary": 5}
    r = registry.advance_rollout(r.id, change(
        3, "succeeded", active=False, canary_weight=0,
        stages=[("production", 3), ("canary", 2)],
        analysis=[{"name": "error_rate", "verdict": "Successful", "value": 0.0}]))
    stages = registry.stage_map("support-bot")
    assert (stages["production"].number, stages["canary"].number) == (3, 2)
    policy = registry.get_traffic("support-bot")
    assert policy is not None and dict(policy.weights) == {"production": 100}
    assert (r.active, r.ended_at is not None, r.revision) == (False, True, 4)
    events = [e for e in registry.events(model="support-bot") if e.kind.startswith("rollout")]
    assert [e.kind for e in events] == ["rollout.started"] + ["rollout.step"] * 3
    assert events[-1].data["analysis"][0]["verdict"] == "Successful"


def test_rolling_back_clears_a_canary_that_held_nothing(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    registry.register_artifact(make_artifact("support-bot"))
    registry.register_artifact(make_artifact("support-bot"))
    registry.promote("support-bot", 1, "production")
    r = registry.start_rollout("support-bot", 2, PLAN)
    assert r.previous_canary is None
    r = registry.advance_rollout(r.id, change(1, "progressing", weight=5, canary_weight=5,
                                              stages=[("canary", 2)]))
    registry.advance_rollout(r.id, change(2, "rolled_back", active=False, canary_weight=0,
                                          stages=[("canary", None)]))
    assert "canary" not in registry.stage_map("support-bot")
    policy = registry.get_traffic("support-bot")
    assert policy is not None and dict(policy.weights) == {"production": 100}


@pytest.mark.parametrize(("setup", "candidate", "message"), [
    pytest.param("no-production", 2, "production of support-bot serves no version",
                 id="no-baseline"),
    pytest.param("normal", 1, "already serves v1", id="candidate-is-production"),
    pytest.param("normal", 9, "has no v9", id="unknown-version"),
    pytest.param("active", 3, "already has an active rollout of v2", id="one-active"),
])
def test_refused_starts(registry: Registry, make_artifact: ArtifactFactory, setup: str,
                        candidate: int, message: str) -> None:  # each with its reason
    for _ in range(3):
        registry.register_artifact(make_artifact("support-bot"))
    if setup != "no-production":
        registry.promote("support-bot", 1, "production")
    if setup == "active":
        registry.start_rollout("support-bot", 2, PLAN)
    with pytest.raises(RegError, match=message):
        registry.start_rollout("support-bot", candidate, PLAN)


def test_a_stale_change_is_refused_and_writes_nothing(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    three_versions(registry, make_artifact)
    r = registry.start_rollout("support-bot", 3, PLAN)
    registry.advance_rollout(r.id, change(1, "verifying"))
    with pytest.raises(StaleRollout, match="revision 2, expected 1"):
        registry.advance_rollout(r.id, change(1, "progressing", canary_weight=50))
    assert registry.get_traffic("support-bot") is None
    assert registry.get_rollout(r.id).phase == "verifying"


def test_two_controllers_racing_one_wins(make_registry: RegistryFactory,
                                         make_artifact: ArtifactFactory) -> None:
    first, second = make_registry(), make_registry()
    three_versions(first, make_artifact)
    r = first.start_rollout("support-bot", 3, PLAN)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def advance(reg: Registry, weight: int) -> None:
        barrier.wait()
        try:
            reg.advance_rollout(r.id, change(1, "progressing", weight=weight,
                                             canary_weight=weight, stages=[("canary", 3)]))
            outcomes.append("won")
        except StaleRollout:
            outcomes.append("stale")

    threads = [threading.Thread(target=advance, args=(reg, w))
               for reg, w in ((first, 5), (second, 50))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["stale", "won"]
    stored = first.get_rollout(r.id)
    policy = first.get_traffic("support-bot")
    assert policy is not None and policy.weights["canary"] == stored.weight
    assert stored.revision == 2


@pytest.mark.parametrize(("current", "weight", "expected"), [
    pytest.param(None, 5, {"production": 95, "canary": 5}, id="no-policy"),
    pytest.param({"production": 80, "staging": 10, "canary": 10}, 25,
                 {"production": 65, "staging": 10, "canary": 25}, id="others-kept"),
    pytest.param({"production": 50, "canary": 50}, 0, {"production": 100}, id="back-to-zero"),
])
def test_canary_weights(current: dict[str, int] | None, weight: int,
                        expected: dict[str, int]) -> None:
    assert canary_weights(current, weight) == expected


def test_canary_weights_refuse_to_starve_production() -> None:
    with pytest.raises(Refused, match="leaves production -10%"):
        canary_weights({"production": 40, "staging": 60}, 50)
