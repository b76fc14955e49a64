"""A recipe's deploy.human_eval guards every promotion into production, in the stage
change's transaction, against a real SQLite and PostgreSQL registry."""

from __future__ import annotations

import pytest

from registry.api import Registry
from registry.errors import Refused
from tests.support.factories import ArtifactFactory
from tests.support.human_eval import GATED_RECIPE, human_result

MODEL = "support-bot"


@pytest.fixture
def reg(registry: Registry, make_artifact: ArtifactFactory) -> Registry:
    """v1 (no requirement) in production; v2 requires a human evaluation."""
    registry.register_artifact(make_artifact(MODEL))
    registry.register_artifact(make_artifact(MODEL, recipe_text=GATED_RECIPE))
    registry.promote(MODEL, 1, "production")
    return registry


def test_refused_until_a_passing_evaluation_is_stored(reg: Registry) -> None:
    marker = reg.change_marker()
    with pytest.raises(Refused, match=r"support-bot@v2 cannot serve production: support-bot@v2 "
                       r"has no human evaluation yet") as e:
        reg.promote(MODEL, 2, "production")
    assert e.value.hint is not None and "reg eval export support-bot v2 v1 OUT" in e.value.hint
    assert reg.change_marker() == marker  # nothing written

    reg.record_human_eval(human_result(MODEL, 2, win_rate=0.5, alpha=0.41, other=1))
    with pytest.raises(Refused, match=r"win rate 0.50 < min_win_rate 0.55 \(against v1\); "
                       r".*alpha 0.41 < min_alpha 0.6"):
        reg.promote(MODEL, 2, "production")
    # Other stages are not gated.
    assert reg.promote(MODEL, 2, "staging").changed

    reg.record_human_eval(human_result(MODEL, 2, win_rate=0.7, alpha=0.8, other=1))
    assert reg.promote(MODEL, 2, "production").warnings == ()
    assert [h.alpha for h in reg.human_evaluations(MODEL, 2)] == [0.41, 0.8]
    events = [e for e in reg.events(model=MODEL) if e.kind == "version.human_eval"]
    assert [e.data["alpha"] for e in events] == [0.41, 0.8] and events[0].version == 2
    # Rolling back is not a promotion: production may return to v1.
    assert reg.rollback(MODEL, "production").to_version == 1


def test_force_lets_it_through_with_the_problems_recorded(reg: Registry) -> None:
    r = reg.promote(MODEL, 2, "production", force=True)
    assert r.forced and any("has no human evaluation yet" in w for w in r.warnings)
    event = [e for e in reg.events(model=MODEL) if e.kind == "stage.promote"][-1]
    assert event.data["forced"] and "has no human evaluation yet" in event.data["warnings"][0]


def test_a_rollout_to_production_is_refused_at_its_start(reg: Registry) -> None:
    plan = {"steps": [{"weight": 50}], "interval": "10s"}
    with pytest.raises(Refused, match="support-bot@v2 has no human evaluation yet"):
        reg.start_rollout(MODEL, 2, plan)
    assert reg.list_rollouts(MODEL) == []
    reg.record_human_eval(human_result(MODEL, 2, win_rate=0.9, alpha=0.9))
    assert reg.start_rollout(MODEL, 2, plan).candidate == 2


def test_an_evaluation_of_an_unknown_version_is_refused(reg: Registry) -> None:
    with pytest.raises(Exception, match="support-bot has no v9"):
        reg.record_human_eval(human_result(MODEL, 9, win_rate=0.9, alpha=0.9))
