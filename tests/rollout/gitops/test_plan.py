"""The planner is pure: every case builds desired and actual state by hand and reads the Plan."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollout.gitops.plan import Action, BackoffPolicy, diff_fields, make_plan, run_key_for
from rollout.gitops.state import (
    BlockedRecipe,
    DesiredModel,
    GitInfo,
    ProblemInfo,
    RunSnapshot,
    VersionSnapshot,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
H1 = "sha256:" + "1" * 64
H2 = "sha256:" + "2" * 64

SPEC: dict[str, Any] = {"name": "bot", "spec": {"training": {"epochs": 1.0, "seed": 42},
                                                 "adapter": {"r": 8}}}

MakeDesired = Callable[..., DesiredModel]
MakeVersion = Callable[..., VersionSnapshot]
MakeRun = Callable[..., RunSnapshot]


@pytest.fixture
def desired() -> MakeDesired:
    def make(name: str = "bot", spec_hash: str = H1, **kw: Any) -> DesiredModel:
        args: dict[str, Any] = {
            "recipe_path": f"/ws/recipes/{name}.yaml", "normalized_spec": SPEC,
            "data_digests": {"data/a.jsonl": "xxh3_128:aa"}, "base_model": {"w": "x"}}
        args.update(kw)
        return DesiredModel(name=name, spec_hash=spec_hash, **args)
    return make


@pytest.fixture
def version() -> MakeVersion:
    def make(version: int = 1, spec_hash: str = H1, status: str = "ready",
             model: str = "bot", **kw: Any) -> VersionSnapshot:
        args: dict[str, Any] = {
            "created_at": NOW - timedelta(days=1), "normalized_spec": SPEC,
            "data_digests": {"data/a.jsonl": "xxh3_128:aa"}, "base_model": {"w": "x"}}
        args.update(kw)
        return VersionSnapshot(model=model, version=version, spec_hash=spec_hash,
                               status=status, **args)
    return make


@pytest.fixture
def run() -> MakeRun:
    def make(attempt: int = 1, status: str = "failed", spec_hash: str = H1,
             model: str = "bot", finished_at: datetime | None = None,
             error: str | None = "boom") -> RunSnapshot:
        return RunSnapshot(run_id=str(attempt), model=model,
                           spec_hash=spec_hash, status=status, attempt=attempt,
                           created_at=NOW - timedelta(hours=2), finished_at=finished_at,
                           error=error)
    return make


def test_new_model_is_train_with_attempt_one(desired: MakeDesired) -> None:
    plan = make_plan([desired()], [], [], [], now=NOW)
    (m,) = plan.models
    assert m.action is Action.train
    assert (m.run_key, m.run_id) == (run_key_for("bot", H1, 1), None)
    assert m.diff is not None and m.diff.against is None
    assert m.reason == "new model"
    assert plan.exit_code == 2


def test_ready_version_with_same_hash_is_in_sync(
    desired: MakeDesired, version: MakeVersion
) -> None:
    plan = make_plan([desired()], [], [version()], [], now=NOW)
    (m,) = plan.models
    assert (m.action, m.current_version) == (Action.in_sync, "v1")
    assert plan.exit_code == 0


def test_rejected_version_is_settled_not_retrained(
    desired: MakeDesired, version: MakeVersion
) -> None:
    plan = make_plan([desired()], [], [version(status="rejected")], [], now=NOW)
    assert plan.models[0].action is Action.in_sync
    assert "rejected by its gates" in plan.models[0].reason


@pytest.mark.parametrize(
    ("deploy_done", "promote_to", "action"),
    [pytest.param(False, "staging", Action.deploy, id="killed-before-promote"),
     pytest.param(True, "staging", Action.in_sync, id="already-deployed"),
     pytest.param(False, None, Action.in_sync, id="no-deploy-action")],
)
def test_deploy_action_is_finished_after_a_crash(
    desired: MakeDesired, version: MakeVersion, deploy_done: bool, promote_to: str | None,
    action: Action,
) -> None:
    plan = make_plan([desired(promote_to=promote_to)], [], [version(deploy_done=deploy_done)],
                     [], now=NOW)
    assert plan.models[0].action is action
    assert plan.exit_code == (2 if action is Action.deploy else 0)


def test_changed_spec_shows_field_and_data_diff(
    desired: MakeDesired, version: MakeVersion
) -> None:
    new_spec = {"name": "bot", "spec": {"training": {"epochs": 2.0, "seed": 42},
                                        "adapter": {"r": 8}}}
    d = desired(spec_hash=H2, normalized_spec=new_spec,
                data_digests={"data/a.jsonl": "xxh3_128:bb", "data/b.jsonl": "xxh3_128:cc"})
    plan = make_plan([d], [], [version()], [], now=NOW)
    (m,) = plan.models
    assert m.action is Action.train
    assert m.reason == "spec changed since v1"
    assert m.diff is not None
    assert [(c.path, c.old, c.new) for c in m.diff.fields] == [("spec.training.epochs", 1.0, 2.0)]
    assert m.diff.data_changed == ("data/a.jsonl",)
    assert m.diff.data_added == ("data/b.jsonl",)
    assert not m.diff.base_model_changed


def test_diff_fields_reports_added_and_removed_keys() -> None:
    changes = diff_fields({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [1, 3], "d": None}})
    assert [(c.path, c.old, c.new) for c in changes] == [
        ("a.b", 1, None), ("a.c", [1, 2], [1, 3]), ("a.d", None, None)]


def test_interrupted_run_is_resumed_in_its_workdir(desired: MakeDesired, run: MakeRun) -> None:
    plan = make_plan([desired()], [], [], [run(status="training", error=None)], now=NOW)
    (m,) = plan.models
    assert (m.action, m.resume, m.run_id) == (Action.train, True, "1")
    assert m.run_key == run_key_for("bot", H1, 1)


def test_finished_run_without_version_trains_a_new_attempt(
    desired: MakeDesired, run: MakeRun
) -> None:
    plan = make_plan([desired()], [], [], [run(status="succeeded", error=None)], now=NOW)
    (m,) = plan.models
    assert (m.action, m.resume, m.attempt) == (Action.train, False, 2)
    assert "no version is registered" in m.reason


@pytest.mark.parametrize(
    ("failed_ago", "due"),
    [pytest.param(timedelta(seconds=30), False, id="backoff-not-elapsed"),
     pytest.param(timedelta(seconds=61), True, id="backoff-elapsed")],
)
def test_failed_run_is_retried_after_backoff(
    desired: MakeDesired, run: MakeRun, failed_ago: timedelta, due: bool
) -> None:
    policy = BackoffPolicy(base_s=60, factor=2, max_delay_s=3600, max_attempts=5)
    plan = make_plan([desired()], [], [], [run(finished_at=NOW - failed_ago)], now=NOW,
                     policy=policy)
    (m,) = plan.models
    assert m.action is Action.retry
    assert (m.attempt, m.failures, m.due) == (2, 1, due)
    assert (m.run_key, m.run_id) == (run_key_for("bot", H1, 2), None)
    assert m.next_retry_at == NOW - failed_ago + timedelta(seconds=60)
    assert m.last_error == "boom"
    assert m.actionable is due
    assert plan.exit_code == 2


def test_retry_limit_blocks_the_model(desired: MakeDesired, run: MakeRun) -> None:
    policy = BackoffPolicy(max_attempts=2)
    runs = [run(attempt=1, finished_at=NOW - timedelta(hours=1)),
            run(attempt=2, finished_at=NOW - timedelta(minutes=1))]
    plan = make_plan([desired()], [], [], runs, now=NOW, policy=policy)
    (m,) = plan.models
    assert m.action is Action.blocked
    assert "failed 2 time(s) (limit 2)" in m.reason
    assert plan.exit_code == 1


def test_new_spec_hash_starts_retries_afresh(desired: MakeDesired, run: MakeRun) -> None:
    policy = BackoffPolicy(max_attempts=1)
    plan = make_plan([desired(spec_hash=H2)], [], [], [run(finished_at=NOW)], now=NOW,
                     policy=policy)
    assert (plan.models[0].action, plan.models[0].attempt) == (Action.train, 1)


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [pytest.param(1, 10, id="first"), pytest.param(2, 20, id="second"),
     pytest.param(4, 80, id="fourth"), pytest.param(10, 100, id="capped"),
     pytest.param(10_000, 100, id="huge-no-overflow")],
)
def test_backoff_is_exponential_and_capped(failures: int, seconds: float) -> None:
    policy = BackoffPolicy(base_s=10, factor=2, max_delay_s=100)
    assert policy.delay(failures) == timedelta(seconds=seconds)


def test_invalid_recipe_blocks_only_its_model(desired: MakeDesired) -> None:
    problem = ProblemInfo("/ws/recipes/bad.yaml", 3, "spec.adapter.r", "must be > 0",
                          "/ws/recipes/bad.yaml:3: spec.adapter.r: must be > 0")
    plan = make_plan([desired()], [BlockedRecipe("/ws/recipes/bad.yaml", "bad", [problem])],
                     [], [], now=NOW)
    assert {m.model: m.action for m in plan.models} == {"bot": Action.train,
                                                        "bad": Action.blocked}
    bad = plan.get("bad")
    assert bad is not None and bad.problems == (problem,)
    assert plan.exit_code == 1


def test_blocked_model_with_versions_is_not_orphaned(version: MakeVersion) -> None:
    plan = make_plan([], [BlockedRecipe("/ws/r.yaml", "bot", [])], [version()], [], now=NOW,
                     prune=True)
    assert [m.action for m in plan.models] == [Action.blocked]
    assert plan.prune == ()


def test_orphan_is_reported_and_pruned_only_when_asked(version: MakeVersion) -> None:
    vs = [version(1), version(2, stages=("production",)), version(3, status="archived")]
    quiet = make_plan([], [], vs, [], now=NOW)
    assert [m.action for m in quiet.models] == [Action.orphaned]
    assert quiet.prune == () and quiet.exit_code == 0
    pruning = make_plan([], [], vs, [], now=NOW, prune=True)
    assert [(p.model, p.version) for p in pruning.prune] == [("bot", "v1")]
    assert pruning.exit_code == 2


def test_prune_is_withheld_while_an_unreadable_recipe_exists(version: MakeVersion) -> None:
    plan = make_plan([], [BlockedRecipe("/ws/broken.yaml", None, [])], [version()], [],
                     now=NOW, prune=True)
    assert plan.prune == ()
    assert plan.prune_withheld is not None and "/ws/broken.yaml" in plan.prune_withheld


def test_plan_json_is_complete_and_serialisable(
    desired: MakeDesired, version: MakeVersion
) -> None:
    import json

    d = desired(spec_hash=H2, git=GitInfo(commit="abc", dirty=True, repo_root="/ws"))
    data = make_plan([d], [], [version()], [], now=NOW).as_json()
    text = json.dumps(data)
    assert json.loads(text)["models"][0]["git"] == {"commit": "abc", "dirty": True,
                                                   "repo_root": "/ws"}
    assert data["summary"]["train"] == 1 and data["exit_code"] == 2
    assert data["models"][0]["diff"]["against"] == "v1"


def test_plan_is_deterministic(desired: MakeDesired, version: MakeVersion) -> None:
    ds = [desired("b"), desired("a", spec_hash=H2)]
    first = make_plan(ds, [], [version(model="a")], [], now=NOW)
    second = make_plan(list(reversed(ds)), [], [version(model="a")], [], now=NOW)
    assert first == second
    assert [m.model for m in first.models] == ["a", "b"]


def test_unfinished_run_of_an_old_hash_is_closed_as_stale(
    desired: MakeDesired, run: MakeRun
) -> None:
    runs = [run(status="training", error=None), run(status="failed", attempt=2)]
    plan = make_plan([desired(spec_hash=H2)], [], [], runs, now=NOW)
    assert [(r.run_id, r.reason) for r in plan.stale_runs] == [
        ("1", "the recipe changed since it started")]
    kept = make_plan([], [BlockedRecipe("/ws/r.yaml", "bot", [])], [], runs, now=NOW)
    assert kept.stale_runs == ()


def test_unfinished_run_whose_version_exists_is_finished(
    desired: MakeDesired, version: MakeVersion, run: MakeRun
) -> None:
    plan = make_plan([desired()], [], [version()], [run(status="training", error=None)],
                     now=NOW)
    assert plan.models[0].action is Action.in_sync
    assert [(r.run_id, r.version, r.version_status) for r in plan.stale_runs] == [
        ("1", 1, "ready")]
