"""`reg doctor`'s checks, table by table: pure functions over a snapshot, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from registry.doctor.checks import (
    RECIPE_CHECKS,
    check_baseline,
    check_checkpoints,
    check_cleaned,
    check_deduplicated,
    check_early_stopping,
    check_examples,
    check_general_gate,
    check_learning_rate,
    check_peft_first,
    check_pii,
    check_test_split,
    diagnose,
)
from registry.doctor.findings import Finding, Status
from registry.doctor.serving_checks import (
    check_human_eval,
    check_metrics_scraped,
    check_rollout_plan,
)
from registry.doctor.snapshot import InvalidRecipe, Prometheus, RecipeState, Snapshot, Target
from tests.support.doctor import (
    data_stats,
    human_eval,
    monitored,
    reevaluated,
    state,
    version,
)

Check = Callable[[RecipeState], Finding]
TINY = 590_464  # the tiny Llama's parameters

WITH_BASE: dict[str, Any] = {"test": {"examples": 30, "loss": 0.5, "base_loss": 3.0}}
NO_BASE: dict[str, Any] = {"test": {"examples": 30, "loss": 0.5}}
REWARD: dict[str, Any] = {"spec.data.format": "dpo_pairs", "spec.training.objective": "reward",
                          "spec.deploy.target": "none"}
GENERAL: dict[str, Any] = {"spec.evaluation.general": {"path": "../data/general.jsonl"}}
GATED: dict[str, Any] = {**GENERAL, "spec.evaluation.gates": {"max_general_regression": 0.1}}
EARLY: dict[str, Any] = {"spec.training.eval_every_steps": 10,
                         "spec.training.early_stopping": {"patience": 3}}
PLAN: dict[str, Any] = {"steps": [{"weight": 10}, {"weight": 50}]}
HUMAN: dict[str, Any] = {"spec.deploy.human_eval": {"min_win_rate": 0.6, "min_alpha": 0.6}}
CPT: dict[str, Any] = {"spec.training.objective": "cpt", "spec.data.format": "text"}


@pytest.mark.parametrize(("check", "s", "status", "words"), [
    # examples
    pytest.param(check_examples, state(), Status.warn, "not known", id="examples-unknown"),
    pytest.param(check_examples, state(data=data_stats(train=20)), Status.fail,
                 "20 training examples", id="examples-too-few"),
    pytest.param(check_examples, state(data=data_stats(train=120)), Status.warn,
                 "under the 200", id="examples-few"),
    pytest.param(check_examples, state(data=data_stats(train=300)), Status.passed,
                 "300 training examples", id="examples-enough"),
    pytest.param(check_examples, state(data=data_stats(train=300, current=False)),
                 Status.passed, "earlier recipe", id="examples-from-an-older-version"),
    # test split
    pytest.param(check_test_split, state({"spec.data.split": {"test": 0.0}}), Status.fail,
                 "data.split.test is 0", id="test-split-off"),
    pytest.param(check_test_split, state(data=data_stats(test=0)), Status.fail,
                 "no row fell in the test split", id="test-split-empty"),
    pytest.param(check_test_split, state(), Status.warn, "not known", id="test-split-unknown"),
    pytest.param(check_test_split, state(data=data_stats(test=30)), Status.passed,
                 "30 test rows", id="test-split-held-out"),
    # cleaning, dedupe, PII
    pytest.param(check_cleaned, state({"spec.data.clean": {"normalize_whitespace": False}}),
                 Status.warn, "normalize_whitespace", id="cleaning-off"),
    pytest.param(check_cleaned, state(data=data_stats(removed={"short_output": 3,
                                                                "duplicate": 2})),
                 Status.passed, "short_output 3 of", id="cleaning-counts"),
    pytest.param(check_deduplicated, state({"spec.data.clean": {"dedupe": False}}),
                 Status.warn, "dedupe is false", id="dedupe-off"),
    pytest.param(check_deduplicated, state(data=data_stats(removed={"duplicate": 4})),
                 Status.passed, "4 duplicate rows dropped", id="dedupe-counts"),
    pytest.param(check_pii, state({"spec.data.clean": {"redact_pii": False}}), Status.fail,
                 "redact_pii is false", id="pii-off"),
    pytest.param(check_pii, state(data=data_stats(pii={"email": 2, "phone": 0})),
                 Status.passed, "email 2 (", id="pii-counts"),
    # baseline
    pytest.param(check_baseline, state(), Status.warn, "no version", id="baseline-unregistered"),
    pytest.param(check_baseline, state(versions=[version(1, metrics=WITH_BASE)]), Status.passed,
                 "test loss 0.5 against the base model's 3", id="baseline-measured"),
    pytest.param(check_baseline, state(versions=[version(1, metrics=WITH_BASE),
                                                 version(2, metrics=NO_BASE)]),
                 Status.fail, "v2's evaluation record has no base", id="baseline-missing"),
    pytest.param(check_baseline, state(versions=[version(1)]), Status.warn,
                 "stored an evaluation record", id="baseline-no-record"),
    # general-capability gate
    pytest.param(check_general_gate, state(), Status.warn, "no evaluation.general",
                 id="general-none"),
    pytest.param(check_general_gate, state(GENERAL), Status.warn, "no gate",
                 id="general-ungated"),
    pytest.param(check_general_gate, state(GATED, versions=[version(1, metrics={
        "general": {"regression": 0.04}})]), Status.passed, "+4.0%",
        id="general-gated"),
    pytest.param(check_general_gate, state(REWARD), Status.passed, "a reward model",
                 id="general-reward-model"),
    # PEFT before full
    pytest.param(check_peft_first, state(), Status.passed, "lora", id="peft"),
    pytest.param(check_peft_first, state({"spec.adapter.method": "full",
                                            "spec.deploy.target": "none"}),
                 Status.warn, "no PEFT version", id="full-first"),
    pytest.param(check_peft_first, state({"spec.adapter.method": "full",
                                          "spec.deploy.target": "none"},
                                         versions=[version(1, method="lora")]),
                 Status.passed, "after PEFT v1 (lora)", id="full-after-lora"),
    # learning rate
    pytest.param(check_learning_rate, state(), Status.passed, "auto", id="lr-auto"),
    pytest.param(check_learning_rate, state({"spec.training.learning_rate": 2e-4}),
                 Status.passed, "1e-05..0.001", id="lr-lora-7b"),
    pytest.param(check_learning_rate, state({"spec.training.learning_rate": 5e-3}),
                 Status.warn, "above", id="lr-lora-7b-high"),
    pytest.param(check_learning_rate, state({"spec.training.learning_rate": 5e-2}),
                 Status.fail, "above", id="lr-lora-7b-far-above"),
    pytest.param(check_learning_rate, state({"spec.training.learning_rate": 5e-7}),
                 Status.fail, "below", id="lr-lora-7b-far-below"),
    pytest.param(check_learning_rate, state({"spec.training.learning_rate": 1e-2},
                                            num_params=TINY),
                 Status.passed, "scaled by model size", id="lr-lora-tiny"),
    pytest.param(check_learning_rate, state({"spec.training.learning_rate": 2e-4,
                                               "spec.adapter.method": "full",
                                               "spec.deploy.target": "none"}),
                 Status.warn, "full", id="lr-full-at-a-lora-rate"),
    pytest.param(check_learning_rate, state({"spec.training.learning_rate": 2e-4},
                                            num_params=None),
                 Status.passed, "unknown size", id="lr-size-unknown"),
    # checkpoints
    pytest.param(check_checkpoints, state({"spec.training.max_steps": 40}), Status.warn,
                 "checkpoint_every_steps: 10", id="checkpoints-never"),
    pytest.param(check_checkpoints, state({"spec.training.max_steps": 250}), Status.passed,
                 "5 in a run of 250", id="checkpoints-max-steps"),
    pytest.param(check_checkpoints, state(data=data_stats(train=80)), Status.warn,
                 "a run of 10 steps", id="checkpoints-one-epoch"),
    pytest.param(check_checkpoints, state(), Status.passed, "not known", id="checkpoints-epochs"),
    # early stopping
    pytest.param(check_early_stopping, state(), Status.warn, "early_stopping",
                 id="early-stopping-off"),
    pytest.param(check_early_stopping, state(EARLY), Status.passed, "patience 3",
                 id="early-stopping-on"),
    pytest.param(check_early_stopping, state(EARLY, data=data_stats(validation=0)),
                 Status.fail, "validation split is empty", id="early-stopping-blind"),
    pytest.param(check_early_stopping, state({**EARLY, "spec.data.split": {
        "validation": 0.0}}), Status.fail, "data.split.validation", id="early-stopping-no-split"),
    # rollout plan
    pytest.param(check_rollout_plan, state({"spec.deploy.target": "none"}), Status.passed,
                 "not served", id="rollout-not-served"),
    pytest.param(check_rollout_plan, state(), Status.warn, "no deploy.rollout",
                 id="rollout-none"),
    pytest.param(check_rollout_plan, state({"spec.deploy.promote_to": "production"}),
                 Status.fail, "promote_to: production", id="rollout-straight-to-production"),
    pytest.param(check_rollout_plan, state({"spec.deploy.rollout": PLAN}), Status.warn,
                 "min_requests: 300", id="rollout-sample-too-small"),
    pytest.param(check_rollout_plan, state({"spec.deploy.rollout": {
        **PLAN, "min_requests": 300}}), Status.passed, "steps 10, 50%", id="rollout-planned"),
    pytest.param(check_rollout_plan, state({"spec.deploy.rollout": {
        **PLAN, "max_error_rate": 0.05, "min_requests": 60}}), Status.passed,
        "at least 60", id="rollout-looser-ceiling"),
    # human evaluation
    pytest.param(check_human_eval, state(CPT), Status.passed, "continued pre-training",
                 id="human-eval-cpt"),
    pytest.param(check_human_eval, state({"spec.deploy.target": "none"}), Status.passed,
                 "not served", id="human-eval-not-served"),
    pytest.param(check_human_eval, state(versions=[version(1)]), Status.warn,
                 "deploy.human_eval: {min_win_rate", id="human-eval-none"),
    pytest.param(check_human_eval, state(versions=[version(1)], human=human_eval(1)),
                 Status.passed, "win rate 0.70", id="human-eval-unrequired"),
    pytest.param(check_human_eval, state(HUMAN, versions=[version(1, status="rejected")]),
                 Status.warn, "no version of bot is ready", id="human-eval-nothing-ready"),
    pytest.param(check_human_eval, state(HUMAN, versions=[version(1), version(2)]),
                 Status.warn, "reg eval export bot v2", id="human-eval-missing"),
    pytest.param(check_human_eval, state(HUMAN, versions=[version(1)],
                                         human=human_eval(1, wins=3, losses=7)),
                 Status.warn, "win rate 0.30 < min_win_rate 0.6", id="human-eval-lost"),
    pytest.param(check_human_eval, state(HUMAN, versions=[version(1)],
                                         human=human_eval(1, alpha=0.2)),
                 Status.warn, "alpha 0.20 < min_alpha", id="human-eval-raters-disagree"),
    pytest.param(check_human_eval, state(HUMAN, versions=[version(1)], human=human_eval(1)),
                 Status.passed, "win rate >= 0.6", id="human-eval-passed"),
])
def test_recipe_check(check: Check, s: RecipeState, status: Status, words: str) -> None:
    f = check(s)
    assert f.status is status, f
    assert words in f.detail + " " + f.fix, f
    assert f.subject == "bot"
    assert (f.fix == "") == (status is Status.passed), "a problem needs a fix, a pass none"


def _targets(*health: str) -> list[Target]:
    return [Target(job="reg", url=f"http://127.0.0.1:{8000 + i}/metrics", health=h,
                   last_error="" if h == "up" else "connection refused")
            for i, h in enumerate(health)]


@pytest.mark.parametrize(("p", "status", "words"), [
    pytest.param(Prometheus(url=None), Status.warn, "REG_PROMETHEUS_URL", id="unset"),
    pytest.param(Prometheus(url="http://p:9090", error="ConnectError: refused"), Status.fail,
                 "cannot read http://p:9090/api/v1/targets", id="unreachable"),
    pytest.param(Prometheus(url="http://p:9090"), Status.fail, "no active scrape target",
                 id="no-targets"),
    pytest.param(Prometheus(url="http://p:9090", targets=_targets("down")), Status.fail,
                 "connection refused", id="all-down"),
    pytest.param(Prometheus(url="http://p:9090", targets=_targets("up", "down")), Status.warn,
                 "1 of 2 targets up", id="some-down"),
    pytest.param(Prometheus(url="http://p:9090", targets=_targets("up", "up")), Status.passed,
                 "2 of 2 targets up", id="all-up"),
])
def test_metrics_scraped(p: Prometheus, status: Status, words: str) -> None:
    f = check_metrics_scraped(p)
    assert (f.status, f.subject) == (status, "workspace"), f
    assert words in f.detail + " " + f.fix, f


def _snapshot(*states: RecipeState, invalid: list[InvalidRecipe] | None = None,
              prometheus: Prometheus | None = None) -> Snapshot:
    return Snapshot(recipes_dir="/ws/recipes", recipes=list(states), invalid=invalid or [],
                    prometheus=prometheus or Prometheus(url=None))


def _good() -> dict[str, Any]:
    return {**GATED, **EARLY, **HUMAN, "spec.deploy.rollout": {**PLAN, "min_requests": 300},
            "spec.training.max_steps": 200}


def test_a_recipe_that_follows_every_practice_passes_every_item() -> None:
    s = state(_good(), data=data_stats(), versions=[version(1, metrics={
        **WITH_BASE, "general": {"regression": 0.01}})], human=human_eval(1),
              drift=monitored(1), reeval=reevaluated(1))
    report = diagnose(_snapshot(s, prometheus=Prometheus(url="http://p", targets=_targets("up"))))
    assert [f.item for f in report.findings if f.status is not Status.passed] == []
    assert len(report.findings) == len(RECIPE_CHECKS) + 1
    assert report.exit_code == 0


def test_warnings_alone_exit_0_and_one_failure_exits_1() -> None:
    warned = diagnose(_snapshot(state()))
    assert warned.counts["warn"] > 0 and warned.counts["fail"] == 0
    assert warned.exit_code == 0
    failed = diagnose(_snapshot(state(), state({"spec.data.clean": {"redact_pii": False}})))
    assert failed.counts["fail"] == 1 and failed.exit_code == 1
    doc = failed.to_json()
    assert doc["exit_code"] == 1 and doc["counts"] == failed.counts
    assert [f["item"] for f in doc["findings"] if f["status"] == "fail"] == ["data-pii"]


def test_an_invalid_recipe_is_a_failed_item_and_comes_first() -> None:
    bad = InvalidRecipe(path="/ws/recipes/x.yaml", first_problem="x.yaml:3:1: spec: required",
                        problems=3)
    report = diagnose(_snapshot(state(), invalid=[bad]))
    first = report.findings[0]
    assert (first.item, first.status, first.subject) == ("recipe-valid", Status.fail,
                                                         "/ws/recipes/x.yaml")
    assert "(and 2 more)" in first.detail and "reg validate /ws/recipes/x.yaml" in first.fix
    assert report.exit_code == 1
