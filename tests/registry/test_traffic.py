"""registry.traffic: the one policy validator (a pure function) and the policy's storage."""

from __future__ import annotations

import pytest

from registry.api import Registry
from registry.errors import Refused
from registry.traffic import (
    InvalidTraffic,
    Shadow,
    StageTargets,
    TrafficPolicy,
    check_policy,
    policy_problems,
)
from registry.versions import VersionStatus
from tests.support.factories import ArtifactFactory

R = VersionStatus.ready
STAGES: StageTargets = {
    "production": (1, R), "canary": (2, R), "staging": (3, VersionStatus.rejected),
    "blue": (4, VersionStatus.archived), "green": None,
}


@pytest.mark.parametrize(("weights", "shadow"), [
    pytest.param({"production": 100}, None, id="all-production"),
    pytest.param({"production": 90, "canary": 10}, None, id="canary"),
    pytest.param({"production": 100, "green": 0, "blue": 0}, None, id="zero-on-empty-stages"),
    pytest.param({"production": 95, "staging": 5}, None, id="forced-rejected-version"),
    pytest.param({"production": 100}, Shadow("canary", 100), id="shadow"),
    pytest.param({"canary": 100}, None, id="no-production-share"),
])
def test_valid_policies_pass(weights: dict[str, int], shadow: Shadow | None) -> None:
    policy = TrafficPolicy("bot", weights, shadow)
    assert policy_problems(policy, STAGES) == []
    assert check_policy(policy, STAGES) is policy


@pytest.mark.parametrize(("weights", "shadow", "faults"), [
    pytest.param({}, None, ["no weights given (e.g. production=90 canary=10)"], id="empty"),
    pytest.param({"production": 90, "canary": 20}, None, ["weights sum to 110, not 100"],
                 id="sum-over"),
    pytest.param({"production": 101, "canary": -1}, None,
                 ["production=101 is not a whole percentage from 0 to 100",
                  "canary=-1 is not a whole percentage from 0 to 100"], id="out-of-range"),
    pytest.param({"production": True}, None,
                 ["production=True is not a whole percentage from 0 to 100",
                  "weights sum to 1, not 100"], id="bool-is-not-a-weight"),
    pytest.param({"Prod": 100}, None, ["'Prod' is not a valid stage name"], id="bad-name"),
    pytest.param({"production": 90, "v2": 10}, None, ["'v2' is not a valid stage name"],
                 id="version-shaped-name"),
    pytest.param({"production": 100}, Shadow("production", 5),
                 ["the shadow targets production, but it mirrors production's requests: "
                  "pick another stage (e.g. staging)"], id="shadow-production"),
    pytest.param({"production": 100}, Shadow("canary", 0),
                 ["shadow canary=0 is not a whole percentage from 1 to 100 "
                  "(give no shadow for none)"], id="shadow-zero"),
    pytest.param({"production": 90, "green": 10}, None,
                 ["stage green points at no version (stages with versions: blue, canary, "
                  "production, staging)"], id="empty-stage"),
    pytest.param({"production": 90, "nope": 10}, None,
                 ["stage nope points at no version (stages with versions: blue, canary, "
                  "production, staging)"], id="unknown-stage"),
    pytest.param({"production": 90, "blue": 10}, None,
                 ["stage blue points at v4, which is archived"], id="archived"),
    pytest.param({"production": 100}, Shadow("blue", 5),
                 ["stage blue points at v4, which is archived"], id="shadow-archived"),
    pytest.param({"production": 90, "canary": 5}, Shadow("green", 5),
                 ["weights sum to 95, not 100",
                  "stage green points at no version (stages with versions: blue, canary, "
                  "production, staging)"], id="every-fault-at-once"),
])
def test_invalid_policies_list_every_fault(
    weights: dict[str, int], shadow: Shadow | None, faults: list[str]
) -> None:
    policy = TrafficPolicy("bot", weights, shadow)
    assert policy_problems(policy, STAGES) == faults
    with pytest.raises(InvalidTraffic) as e:
        check_policy(policy, STAGES)
    assert str(e.value) == "invalid traffic policy for bot: " + "; ".join(faults)
    assert e.value.hint is not None and "sum to 100" in e.value.hint


def test_a_bad_stage_name_brings_the_naming_rule_into_the_hint() -> None:
    with pytest.raises(InvalidTraffic) as e:
        check_policy(TrafficPolicy("bot", {"Prod": 100}), STAGES)
    assert e.value.hint is not None and e.value.hint.startswith("stage names: use production")


def test_a_policy_is_an_immutable_hashable_value() -> None:
    weights = {"production": 90, "canary": 10}
    p = TrafficPolicy("bot", weights, Shadow("staging", 5))
    weights["canary"] = 50
    assert p.weights == {"production": 90, "canary": 10}
    with pytest.raises(TypeError):
        p.weights["canary"] = 50  # type: ignore[index]
    assert p == TrafficPolicy("bot", {"canary": 10, "production": 90}, Shadow("staging", 5))
    assert len({p, TrafficPolicy("bot", {"production": 90, "canary": 10},
                                 Shadow("staging", 5))}) == 1
    assert p.describe() == "production=90 canary=10 shadow staging=5"


def test_set_traffic_validates_in_its_transaction_and_stores_the_value(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    registry.register_artifact(make_artifact())
    registry.register_artifact(make_artifact())
    registry.promote(None, "v1", "production")
    marker = registry.change_marker()
    with pytest.raises(InvalidTraffic, match=(
            r"weights sum to 110, not 100; stage canary points at no version \(stages with "
            r"versions: production\)")):
        registry.set_traffic(None, {"production": 90, "canary": 20})
    assert registry.get_traffic("support-bot") is None and registry.change_marker() == marker
    registry.promote(None, "v2", "canary")
    policy = registry.set_traffic(None, {"production": 90, "canary": 10}, Shadow("canary", 5),
                                  reason="start canary")
    assert policy == TrafficPolicy("support-bot", {"production": 90, "canary": 10},
                                   Shadow("canary", 5))
    assert registry.get_traffic("support-bot") == policy
    registry.set_traffic(None, {"production": 75, "canary": 25})
    assert registry.get_traffic("support-bot") == TrafficPolicy(
        "support-bot", {"production": 75, "canary": 25})
    (event, previous) = registry.events(model="support-bot", kinds=["traffic.set"])[::-1][:2]
    assert event.data["revision"] == 2 and previous.data["shadow"] == {"canary": 5}
    with pytest.raises(Refused, match="stage canary receives 25% of traffic"):
        registry.clear_stage(None, "canary")


def test_rollback_past_a_clear_is_refused_while_the_stage_has_traffic(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    # The invariant tests/registry/test_concurrency.py's replay checks after every event: a
    # rollback to "no version" (back past a clear) used to leave the stored policy sending
    # traffic to a stage that held nothing.
    for _ in range(2):
        registry.register_artifact(make_artifact())
    registry.promote(None, "v1", "production")
    registry.promote(None, "v1", "staging")
    registry.clear_stage(None, "staging")
    registry.promote(None, "v2", "staging")
    registry.set_traffic(None, {"production": 80, "staging": 20})
    marker = registry.change_marker()
    with pytest.raises(Refused, match=r"staging would roll back to no version .* receives 20%"):
        registry.rollback(None, "staging")
    assert registry.stage_map(None)["staging"].number == 2 and registry.change_marker() == marker
    registry.set_traffic(None, {"production": 100, "staging": 0})
    assert registry.rollback(None, "staging").to_version is None
