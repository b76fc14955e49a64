"""The Registry facade against real SQLite and PostgreSQL: register, promote, rollback, history."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from recipes.artifact import ArtifactError
from registry.api import Registry
from registry.deployments import Deployment
from registry.errors import Ambiguous, InvalidName, NotFound, Refused
from registry.runs import RunStatus
from registry.stages import StageAction
from registry.tables import RunUpdate
from registry.versions import VersionStatus
from tests.support.clock import FakeClock
from tests.support.factories import ArtifactFactory, RegistryFactory


def test_register_records_identity_metrics_and_lineage(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    art = make_artifact("support-bot", spec="sha256:" + "a" * 64)
    v1 = registry.register_artifact(art, run_id=7, git_commit="abc123", git_dirty=False,
                                    recipe_path="recipes/bot.yaml", creator="alice")
    assert (v1.model, v1.number, v1.status) == ("support-bot", 1, VersionStatus.ready)
    assert v1.spec_hash == "sha256:" + "a" * 64
    assert v1.adapter_name == "support-bot@v1"
    assert v1.adapter_rank == 8 and v1.method == "lora" and v1.objective == "sft"
    assert v1.base_model_path == "/models/tiny-llama"
    assert v1.base_model["config.json"] == "xxh3_128:00"
    assert v1.recipe_text == (art / "recipe.yaml").read_text()
    assert v1.metrics["gates_passed"] is True and v1.gates_passed is True
    assert v1.gate_results[0]["gate"] == "max_eval_loss"
    assert (v1.run_id, v1.git_commit, v1.git_dirty, v1.creator) == (7, "abc123", False, "alice")
    assert v1.parent_number is None
    manifest = json.loads((art / "manifest.json").read_text())
    stored = registry.get_artifact(v1.artifact_digest or "")
    assert stored.manifest == manifest and stored.file_count == len(manifest["files"])
    v2 = registry.register_artifact(make_artifact("support-bot"))
    assert (v2.number, v2.parent_number) == (2, 1)


def test_a_diverged_run_with_nan_metrics_registers_on_both_databases(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    nan, inf = float("nan"), float("inf")
    art = make_artifact(metrics={
        "eval_loss": nan, "perplexity": inf, "base": {"eval_loss": 2.5}, "gates_passed": False,
        "gates": [{"gate": "max_eval_loss", "threshold": 3.0, "value": nan, "passed": False}],
    })
    assert "NaN" in (art / "metrics.json").read_text()
    v = registry.register_artifact(art)
    assert v.status == VersionStatus.rejected
    assert v.metrics["eval_loss"] is None and v.metrics["perplexity"] is None
    assert v.metrics["base"] == {"eval_loss": 2.5}
    assert v.gate_results[0]["value"] is None and v.gate_results[0]["threshold"] == 3.0
    assert registry.get_version("support-bot", 1).metrics == v.metrics


def test_same_spec_hash_registers_once(registry: Registry, make_artifact: ArtifactFactory) -> None:
    spec = "sha256:" + "b" * 64
    first = registry.register(make_artifact(spec=spec))
    again = registry.register(make_artifact(spec=spec))
    assert first.created and not again.created
    assert again.version.number == first.version.number == 1
    assert registry.count_versions() == 1


def test_failed_gates_register_as_rejected_and_promote_needs_force(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    v = registry.register_artifact(make_artifact(gates_passed=False))
    assert v.status == VersionStatus.rejected and v.gates_passed is False
    with pytest.raises(Refused, match=r"v1 is rejected .*refusing to promote it to production"):
        registry.promote(None, "v1", "production")
    assert registry.stage_map(None) == {}
    r = registry.promote(None, "v1", "production", force=True, reason="hotfix")
    assert r.changed and r.forced
    assert registry.history()[0].forced is True


def test_a_broken_artifact_writes_nothing(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    art = make_artifact()
    (art / "adapter_config.json").write_text("{}")  # edited after the manifest was written
    with pytest.raises(ArtifactError, match=r"adapter_config.json: sha256 .* does not match"):
        registry.register_artifact(art)
    assert registry.list_models() == [] and registry.change_marker() == 0


def test_user_flow_promote_promote_rollback_history(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    registry.register_artifact(make_artifact())
    registry.register_artifact(make_artifact())
    registry.promote(None, "v1", "production", actor="alice", reason="first")
    registry.promote(None, "v2", "production", actor="bob")
    back = registry.rollback(None, "production", actor="carol", reason="v2 is slow")
    assert (back.action, back.from_version, back.to_version) == (StageAction.rollback, 2, 1)
    events = registry.history()
    assert [(e.action, e.from_version, e.to_version, e.actor) for e in events] == [
        ("promote", None, 1, "alice"), ("promote", 1, 2, "bob"), ("rollback", 2, 1, "carol")]
    assert registry.stage_map(None)["production"].number == 1
    assert registry.get_version("support-bot", 1).stages == ["production"]
    assert registry.get_version("support-bot", 2).stages == []


def test_rollback_is_repeatable_and_stops_at_the_start(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    for _ in range(3):
        registry.register_artifact(make_artifact())
    for n in (1, 2, 3):
        registry.promote(None, n, "production")
    assert registry.rollback(None, "production").to_version == 2
    assert registry.rollback(None, "production").to_version == 1
    with pytest.raises(Refused, match="production has no earlier version to roll back to"):
        registry.rollback(None, "production")
    with pytest.raises(Refused, match="stage canary has no earlier version"):
        registry.rollback(None, "canary")


def test_promote_to_the_current_version_changes_nothing(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    registry.register_artifact(make_artifact())
    assert registry.promote(None, "v1", "staging").changed
    marker = registry.change_marker()
    again = registry.promote(None, "v1", "staging")
    assert not again.changed and registry.change_marker() == marker
    assert len(registry.history()) == 1


def test_history_at_a_time(
    registry: Registry, make_artifact: ArtifactFactory, clock: FakeClock
) -> None:
    registry.register_artifact(make_artifact())
    registry.register_artifact(make_artifact())
    registry.promote(None, "v1", "production")
    t1 = clock.advance(3600)
    registry.promote(None, "v2", "production")
    registry.promote(None, "v1", "canary")
    t2 = clock.advance(3600)
    registry.rollback(None, "production")
    assert registry.stages_at(None, t1) == {"production": 1}
    assert registry.stages_at(None, t2) == {"production": 2, "canary": 1}
    assert registry.stages_at(None, clock.advance(1)) == {"production": 1, "canary": 1}
    assert registry.stages_at(None, t1 - timedelta(days=1)) == {}
    assert [e.to_version for e in registry.history(at=t1)] == [1]
    assert [e.stage for e in registry.history(stage="canary")] == ["canary"]


def test_model_and_version_resolution(registry: Registry, make_artifact: ArtifactFactory) -> None:
    with pytest.raises(NotFound, match="the registry has no models yet"):
        registry.resolve(None, "v1")
    registry.register_artifact(make_artifact("support-bot"))
    assert registry.resolve(None, "v1").model == "support-bot"
    registry.register_artifact(make_artifact("sales-bot"))
    with pytest.raises(Ambiguous, match=r"which model\? the registry has 2: sales-bot, support"):
        registry.resolve(None, "v1")
    assert registry.resolve(None, "sales-bot@v1").model == "sales-bot"
    assert registry.resolve("support-bot", "1").model == "support-bot"
    with pytest.raises(NotFound, match=r"support-bot has no v9 \(versions: v1\)"):
        registry.resolve("support-bot", "v9")
    with pytest.raises(NotFound, match=r"no model named 'nope' \(models: sales-bot, support-bot\)"):
        registry.resolve("nope", "v1")
    with pytest.raises(InvalidName, match="'latest' is not a version reference"):
        registry.resolve("support-bot", "latest")
    with pytest.raises(InvalidName, match="'v2' is not a valid stage name"):
        registry.promote("support-bot", "v1", "v2")


def test_versions_in_a_stage_cannot_be_archived(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    registry.register_artifact(make_artifact())
    registry.register_artifact(make_artifact())
    registry.promote(None, "v1", "production")
    with pytest.raises(Refused, match=r"in stage\(s\) production and cannot be archived"):
        registry.set_version_status("support-bot", 1, VersionStatus.archived)
    archived = registry.set_version_status("support-bot", 2, VersionStatus.archived)
    assert archived.status == VersionStatus.archived
    with pytest.raises(Refused, match="v2 is archived and can never be in a stage"):
        registry.promote(None, "v2", "staging", force=True)
    with pytest.raises(Refused, match="a version in status archived cannot become ready"):
        registry.set_version_status("support-bot", 2, VersionStatus.ready)


def test_deployments_list_what_stages_point_at(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    registry.register_artifact(make_artifact("support-bot", rank=8))
    registry.register_artifact(make_artifact("support-bot", rank=16))
    registry.register_artifact(make_artifact("sales-bot"))
    registry.promote("support-bot", "v1", "production")
    registry.promote("support-bot", "v1", "staging")
    registry.promote("support-bot", "v2", "canary")
    deps = registry.deployments()
    assert [(d.adapter_name, d.stages, d.adapter_rank) for d in deps] == [
        ("support-bot@v1", ("production", "staging"), 8),
        ("support-bot@v2", ("canary",), 16),
    ]
    v1 = registry.get_version("support-bot", 1)
    assert deps[0] == Deployment(
        model="support-bot", version=1, stages=("production", "staging"),
        digest=v1.artifact_digest or "", base_model_path="/models/tiny-llama", adapter_rank=8,
        method="lora", max_model_len=512, target="vllm", status=VersionStatus.ready)


def test_fetch_artifact_materialises_a_verified_copy(
    registry: Registry, make_artifact: ArtifactFactory, tmp_path: Path
) -> None:
    art = make_artifact()
    v = registry.register_artifact(art)
    out = registry.fetch_artifact(v, tmp_path / "cache")
    assert out.name == (v.artifact_digest or "").removeprefix("sha256:")
    for f in art.iterdir():
        assert (out / f.name).read_bytes() == f.read_bytes()
    assert registry.fetch_artifact(v, tmp_path / "cache") == out  # idempotent


def test_change_marker_moves_on_every_change(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    seen = [registry.change_marker()]
    registry.register_artifact(make_artifact())
    seen.append(registry.change_marker())
    registry.promote(None, "v1", "production")
    seen.append(registry.change_marker())
    registry.set_traffic(None, {"production": 100})
    seen.append(registry.change_marker())
    assert seen == sorted(set(seen)) and seen[0] == 0


def test_runs_record_the_reconcilers_attempts(registry: Registry) -> None:
    run = registry.create_run("support-bot", "sha256:" + "c" * 64, workdir="/w/1",
                              git_commit="abc", git_dirty=True)
    assert run.status == RunStatus.training and run.attempts == 1
    registry.update_run(run.id, phase="train", log_tail="step 10 loss 1.2")
    failed = registry.update_run(run.id, RunUpdate(status=RunStatus.failed, error="OOM"))
    assert (failed.status, failed.error, failed.phase) == ("failed", "OOM", "train")
    retry = registry.update_run(run.id, status="training", attempts=2)
    done = registry.update_run(run.id, status="succeeded", version_number=1)
    assert retry.attempts == 2 and done.version_number == 1
    with pytest.raises(Refused, match="a succeeded run cannot become training"):
        registry.update_run(run.id, status="training")
    with pytest.raises(NotFound, match="run 999 does not exist"):
        registry.get_run(999)
    assert [r.id for r in registry.list_runs(model="support-bot")] == [run.id]
    assert registry.list_runs(status="failed") == []
    kinds = [e.kind for e in registry.events()]
    assert kinds == ["run.created"] + ["run.updated"] * 4


def test_events_log_who_did_what(registry: Registry, make_artifact: ArtifactFactory) -> None:
    registry.register_artifact(make_artifact(), creator="ci")
    registry.promote(None, "v1", "production", actor="alice", reason="launch")
    rid = registry.record_event("rollout.step", actor="controller", model="support-bot",
                                message="weight 5", data={"weight": 5})
    evs = registry.events()
    assert [e.kind for e in evs] == ["model.created", "version.registered", "stage.promote",
                                     "rollout.step"]
    promote = evs[2]
    assert (promote.actor, promote.stage, promote.version) == ("alice", "production", 1)
    assert "launch" in promote.message
    assert [e.id for e in registry.events(since_id=evs[1].id)] == [evs[2].id, rid]
    assert [e.kind for e in registry.events(limit=1)] == ["rollout.step"]


def test_a_second_registry_on_the_same_database_sees_the_same_state(
    make_registry: RegistryFactory, make_artifact: ArtifactFactory
) -> None:
    a = make_registry()
    a.register_artifact(make_artifact())
    a.promote(None, "v1", "production")
    b = make_registry()
    assert b.stage_map(None)["production"].number == 1
    assert [m.name for m in b.list_models()] == ["support-bot"]
    assert b.list_models()[0].stages == {"production": 1}


def test_list_versions_equals_get_version_field_for_field(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    """The listing builds its objects from plain rows; each must equal the single-version read."""
    registry.register_artifact(make_artifact())
    registry.register_artifact(make_artifact(gates_passed=False, metrics={
        "eval_loss": 2.5, "gates_passed": False, "nested": {"a": [1, {"b": None}]}}))
    registry.register_artifact(make_artifact())
    registry.register_artifact(make_artifact("faq-bot"))
    registry.promote("support-bot", "v1", "production")
    registry.promote("support-bot", "v1", "staging")
    registry.promote("support-bot", "v3", "canary")
    listed = registry.list_versions("support-bot")
    expected = [registry.get_version("support-bot", n) for n in (1, 2, 3)]
    assert listed == expected
    assert [(v.ref, v.stages, type(v.status), v.created_at.tzname()) for v in listed] == [
        ("support-bot@v1", ["production", "staging"], VersionStatus, "UTC"),
        ("support-bot@v2", [], VersionStatus, "UTC"),
        ("support-bot@v3", ["canary"], VersionStatus, "UTC"),
    ]
    assert listed[0].metrics is not listed[2].metrics  # no state shared between rows
    assert [v.ref for v in registry.list_versions()] == [
        "support-bot@v1", "support-bot@v2", "support-bot@v3", "faq-bot@v1"]
    assert [v.number for v in registry.list_versions("support-bot", limit=2)] == [2, 3]
    assert [v.number for v in registry.list_versions(
        "support-bot", status=VersionStatus.rejected)] == [2]


def test_json_columns_decode_like_json_loads(
    registry: Registry, make_artifact: ArtifactFactory
) -> None:
    """Stored JSON reads back as json.loads would read it, even nested past the fast parser's
    200 levels."""
    deep: object = "leaf"
    for _ in range(300):
        deep = [deep]
    metrics = {"gates_passed": True, "big": 2**70, "pi": 3.141592653589793, "tiny": 5e-324,
               "text": "é 😀 \\ \"", "deep": deep}
    registry.register_artifact(make_artifact(metrics=metrics))
    (listed,) = registry.list_versions()
    assert listed.metrics == metrics
    assert registry.get_version("support-bot", 1).metrics == metrics
