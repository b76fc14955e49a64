"""Deploy guards run inside every stage change's transaction: promote, rollback, clear.

The adapter-slot limit is serving's rule, injected as a ``DeployGuard`` (the real one,
``serving.engines.capacity.SlotGuard``); the vLLM-servability rule is the registry's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from registry.api import Registry
from registry.deployments import Deployment, after_change
from registry.errors import Refused
from serving.engines.capacity import CapacityError, SlotGuard, check_capacity
from tests.support.factories import ArtifactFactory, RegistryFactory

BASE = "/models/tiny-llama"
Slots = Callable[[int], Registry]


@pytest.fixture
def slots(make_registry: RegistryFactory) -> Slots:
    """``slots(n)``: a registry whose stage changes pass an n-adapter slot guard."""
    return lambda n: make_registry(guards=(SlotGuard(n),))


def _register(reg: Registry, make_artifact: ArtifactFactory, count: int, **kw: Any) -> None:
    for _ in range(count):
        reg.register_artifact(make_artifact(**kw))


def _stages(reg: Registry, model: str = "support-bot") -> dict[str, int]:
    return {s: v.number for s, v in reg.stage_map(model).items()}


def test_promote_beyond_the_slots_is_refused_and_writes_nothing(
    slots: Slots, make_artifact: ArtifactFactory
) -> None:
    reg = slots(1)
    _register(reg, make_artifact, 2)
    reg.promote(None, "v1", "production")
    marker = reg.change_marker()
    with pytest.raises(CapacityError, match=(
            rf"2 versions would be deployed on the engine for {BASE} \(support-bot@v1, "
            r"support-bot@v2\), but it has 1 adapter slots \(REG_MAX_LORAS\)")) as e:
        reg.promote(None, "v2", "canary")
    assert e.value.hint is not None and "--force" in e.value.hint
    assert _stages(reg) == {"production": 1} and reg.change_marker() == marker
    # Moving the one deployed stage keeps one adapter deployed: allowed.
    assert reg.promote(None, "v2", "production").warnings == ()


def test_force_lets_it_through_with_a_recorded_warning(
    slots: Slots, make_artifact: ArtifactFactory
) -> None:
    reg = slots(1)
    _register(reg, make_artifact, 2)
    reg.promote(None, "v1", "production")
    r = reg.promote(None, "v2", "canary", force=True, reason="load test")
    assert r.changed and r.forced
    (warning,) = r.warnings
    assert warning.endswith("forced: expect lower throughput under mixed traffic")
    (event,) = reg.events(model="support-bot", kinds=["stage.promote"])[-1:]
    assert event.data["forced"] is True and event.data["warnings"] == [warning]
    assert reg.history(None, stage="canary")[-1].forced


def test_slots_are_counted_per_engine_across_models(
    slots: Slots, make_artifact: ArtifactFactory
) -> None:
    reg = slots(1)
    reg.register_artifact(make_artifact("support-bot"))
    reg.register_artifact(make_artifact("sales-bot"))
    reg.register_artifact(make_artifact("other-bot", base_model_path="/models/other"))
    reg.promote("support-bot", "v1", "production")
    with pytest.raises(CapacityError, match=r"\(sales-bot@v1, support-bot@v1\)"):
        reg.promote("sales-bot", "v1", "production")
    reg.promote("other-bot", "v1", "production")  # another base model: another engine


def test_rollback_beyond_the_slots_is_refused_unless_forced(
    slots: Slots, make_artifact: ArtifactFactory
) -> None:
    reg = slots(2)
    _register(reg, make_artifact, 3)
    reg.promote(None, "v1", "production")
    reg.promote(None, "v2", "canary")
    reg.promote(None, "v1", "canary")  # v2 leaves the engine
    reg.promote(None, "v3", "staging")
    with pytest.raises(CapacityError, match=r"3 versions .*but it has 2 adapter slots"):
        reg.rollback(None, "canary")
    assert _stages(reg) == {"production": 1, "canary": 1, "staging": 3}
    r = reg.rollback(None, "canary", force=True)
    assert (r.from_version, r.to_version, len(r.warnings)) == (1, 2, 1)


def test_a_change_that_adds_no_adapter_passes_an_over_full_engine(
    slots: Slots, make_artifact: ArtifactFactory
) -> None:
    reg = slots(1)
    _register(reg, make_artifact, 2)
    reg.promote(None, "v1", "production")
    reg.promote(None, "v2", "canary", force=True)
    reg.promote(None, "v1", "staging")  # already loaded
    assert reg.clear_stage(None, "canary").changed


def test_without_guards_the_registry_judges_only_its_own_rules(
    make_registry: RegistryFactory, make_artifact: ArtifactFactory
) -> None:
    reg = make_registry()
    _register(reg, make_artifact, 3)
    for n, stage in ((1, "production"), (2, "canary"), (3, "staging")):
        assert reg.promote(None, n, stage).warnings == ()


def test_versions_not_served_by_vllm_take_no_slot(
    slots: Slots, make_artifact: ArtifactFactory
) -> None:
    reg = slots(1)
    reg.register_artifact(make_artifact())
    reg.register_artifact(make_artifact(deploy={"deploy_target": "none"}))
    reg.promote(None, "v1", "production")
    reg.promote(None, "v2", "canary")
    assert [(d.version, d.target) for d in reg.deployments()] == [(1, "vllm"), (2, "none")]


@pytest.mark.parametrize(("method", "rank", "why"), [
    pytest.param("ia3", 8, r"cannot serve a ia3 adapter \(it serves lora, qlora\)", id="ia3"),
    pytest.param("full", 8, r"cannot serve a full fine-tune", id="full"),
    pytest.param("prefix_tuning", 8, r"cannot serve a prefix_tuning adapter", id="prefix"),
    pytest.param("prompt_tuning", 8, r"cannot serve a prompt_tuning adapter", id="prompt"),
    pytest.param("dora", 8, r"cannot serve a dora adapter", id="dora"),
    pytest.param("lora", 7, r"vLLM serves LoRA ranks \[1, 8, .*\] only, not r=7", id="rank"),
])
def test_a_version_vllm_cannot_serve_is_refused_for_a_vllm_deploy(
    make_registry: RegistryFactory, make_artifact: ArtifactFactory, method: str, rank: int,
    why: str,
) -> None:
    reg = make_registry()
    reg.register_artifact(make_artifact(method=method, rank=rank))
    marker = reg.change_marker()
    for force in (False, True):  # --force cannot make vLLM load it
        with pytest.raises(Refused, match=rf"support-bot@v1 cannot be deployed to production: .*"
                           rf"{why}.*, and its recipe's deploy.target is vllm") as e:
            reg.promote(None, "v1", "production", force=force)
        assert e.value.hint is not None
        assert "`reg export support-bot v1 OUT --merged`" in e.value.hint
        assert "deploy.target: none" in e.value.hint
    assert reg.stage_map(None) == {} and reg.change_marker() == marker
    # Recorded with deploy.target: none, the same kind of version may sit in a stage.
    reg.register_artifact(make_artifact(method=method, rank=rank,
                                        deploy={"deploy_target": "none"}))
    assert reg.promote(None, "v2", "production").changed


def test_deployments_carry_the_recipes_deploy_facts(
    make_registry: RegistryFactory, make_artifact: ArtifactFactory
) -> None:
    reg = make_registry()
    reg.register_artifact(make_artifact(rank=16, deploy={"deploy_target": "vllm",
                                                         "max_model_len": 2048}))
    reg.register_artifact(make_artifact())  # an artifact that records no deploy facts
    reg.promote(None, "v1", "production")
    reg.promote(None, "v2", "canary")
    d1, d2 = reg.deployments()
    assert (d1.adapter_name, d1.max_model_len, d1.adapter_rank, d1.target) == (
        "support-bot@v1", 2048, 16, "vllm")
    assert (d2.max_model_len, d2.target) == (512, "vllm")


def _dep(version: int, *stages: str, model: str = "bot", base: str = BASE,
         target: str = "vllm") -> Deployment:
    return Deployment(model, version, stages, f"sha256:{version}", base, target=target)


@pytest.mark.parametrize(("stage", "target", "after"), [
    pytest.param("canary", _dep(3), [(1, ("production",)), (3, ("canary",))], id="replace"),
    pytest.param("staging", _dep(1), [(1, ("production", "staging")), (2, ("canary",))],
                 id="join-a-deployed-version"),
    pytest.param("canary", None, [(1, ("production",))], id="clear"),
    pytest.param("production", _dep(2), [(2, ("canary", "production"))], id="move-production"),
])
def test_after_change_is_the_deployed_set_the_change_leaves(
    stage: str, target: Deployment | None, after: list[tuple[int, tuple[str, ...]]]
) -> None:
    before = [_dep(1, "production"), _dep(2, "canary"), _dep(9, "production", model="other")]
    got = after_change(before, "bot", stage, target)
    assert [(d.version, d.stages) for d in got if d.model == "bot"] == after
    assert [d.version for d in got if d.model == "other"] == [9]


def test_check_capacity_judges_only_engines_that_gain_an_adapter() -> None:
    full = [_dep(1, "production"), _dep(2, "canary")]
    assert check_capacity(full, full, 1) == []  # over, but nothing added
    with pytest.raises(CapacityError, match="3 versions would be deployed"):
        check_capacity(full, [*full, _dep(3, "staging")], 1)
    assert check_capacity(full, [*full, _dep(3, "staging", target="none")], 1) == []
    (warning,) = check_capacity([], full, 1, force=True)
    assert "forced" in warning


def test_replicas_multiply_a_bases_slots() -> None:
    """Adapters are placed over a base's replicas, so its slots are max_loras on each."""
    three = [_dep(1, "production"), _dep(2, "staging"), _dep(3, "canary")]
    assert check_capacity([], three, 2, replicas=2) == []
    with pytest.raises(CapacityError, match=r"on the 2 engine replicas for .* but they have 2 "
                                            r"adapter slots \(REG_MAX_LORAS x replicas\)"):
        check_capacity([], three, 1, replicas=2)
    base = three[0].base_model_path
    assert check_capacity([], three, 1, replicas=1, external={base: 3}) == []
