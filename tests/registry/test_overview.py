"""`Registry.overview()`: the operators' read model, on real SQLite and PostgreSQL.

Built from real registrations, promotions, traffic changes, rollouts, runs and events;
asserts what each part of the overview holds, that version and run lists are bounded,
and that the number of queries does not grow with the number of versions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from registry.api import Registry, RolloutChange
from registry.api.overview import check_overview, gate_summaries, key_metrics
from registry.errors import NotFound
from tests.support.factories import ArtifactFactory

MODEL = "support-bot"
PLAN = {"steps": [{"weight": 5}, {"weight": 50}, {"weight": 100}], "interval": "30s",
        "failure_limit": 2}
ANALYSIS = [
    {"name": "error_rate", "verdict": "Inconclusive", "value": 0.02, "limit": 0.01,
     "canary_n": 40, "baseline_n": 760, "p_value": 0.25, "detail": "not clear yet"},
    {"name": "latency_p95", "verdict": "Successful", "value": 1.1, "limit": 1.5,
     "canary_n": 39, "baseline_n": 760, "p_value": 1.0, "detail": "1/39 above 80.0 ms"},
]


@contextmanager
def counting(reg: Registry) -> Iterator[list[str]]:
    """The SQL statements ``reg`` sends while the block runs."""
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(reg.engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        sa.event.remove(reg.engine, "before_cursor_execute", note)


def populated(reg: Registry, make_artifact: ArtifactFactory) -> None:
    """support-bot v1..v3 (v1 production, v3 rolling out at 5%), other-bot v1; runs, events."""
    for _ in range(3):
        reg.register(make_artifact(MODEL), git_commit="abc123")
    reg.register_artifact(make_artifact("other-bot"))
    reg.promote(MODEL, 1, "production")
    reg.promote("other-bot", 1, "production")
    r = reg.start_rollout(MODEL, 3, PLAN, origin="recipe", actor="ctl")
    reg.advance_rollout(r.id, RolloutChange(
        expected_revision=1, phase="progressing", active=True, step=0, weight=5, failures=0,
        step_started_at=datetime(2026, 1, 1, tzinfo=UTC), reason="step 1 at 5%",
        event="rollout.step", canary_weight=5, stages=[("canary", 3)]))
    reg.note_rollout_analysis(r.id, ANALYSIS)
    run = reg.create_run(MODEL, "sha256:abc", phase="start", git_commit="abc123")
    reg.update_run(run.id, status="succeeded", phase="done", version_number=3)
    reg.create_run("other-bot", "sha256:def")
    reg.record_event("reconcile.registered", model=MODEL, version=3, message="v3 ready")
    reg.record_event("reconcile.pass_failed", message="git is unreachable")


def test_overview_holds_each_models_state(registry: Registry,
                                         make_artifact: ArtifactFactory) -> None:
    populated(registry, make_artifact)
    ov = registry.overview()
    assert [m.name for m in ov.models] == ["other-bot", MODEL]
    m = ov.models[1]
    assert (m.versions_total, m.latest) == (3, 3)
    assert m.stages == {"production": 1, "canary": 3}
    assert [v.number for v in m.versions] == [3, 2, 1]
    v3, v2, v1 = m.versions
    assert (v3.stages, v1.stages, v2.stages) == (["canary"], ["production"], [])
    assert (v3.parent, v2.parent, v1.parent) == (2, 1, None)
    assert (v3.adapter_name, v3.status, v3.git_commit) == ("support-bot@v3", "ready", "abc123")
    stored = registry.get_version(MODEL, 3)
    assert (v3.spec_hash, v3.artifact_digest) == (stored.spec_hash, stored.artifact_digest)
    assert v3.metrics == {"eval_loss": stored.metrics["eval_loss"]}
    assert v3.gates_passed is True
    assert [(g.gate, g.passed, g.threshold) for g in v3.gates] == [("max_eval_loss", True, 3.0)]

    assert (m.traffic.weights, m.traffic.default) == ({"production": 95, "canary": 5}, False)
    assert m.traffic.revision is not None
    other = ov.models[0]
    assert (other.traffic.weights, other.traffic.default) == ({"production": 100}, True)

    ro = m.rollout
    assert ro is not None
    assert (ro.candidate, ro.baseline, ro.phase, ro.active) == (3, 1, "progressing", True)
    assert (ro.step, ro.steps, ro.weight, ro.failure_limit, ro.interval_s) == (
        0, [5, 50, 100], 5, 2, 30.0)
    assert ro.reason == "step 1 at 5%"
    assert [(c.name, c.verdict, c.value, c.canary_n, c.confidence) for c in ro.analysis] == [
        ("error_rate", "Inconclusive", 0.02, 40, 0.75),
        ("latency_p95", "Successful", 1.1, 39, 0.0)]
    assert other.rollout is None

    assert m.last_reconcile is not None and m.last_reconcile.kind == "reconcile.registered"
    assert ov.last_reconcile is not None and ov.last_reconcile.kind == "reconcile.pass_failed"
    assert other.last_reconcile is None
    assert [(r.status, r.version, r.phase) for r in m.runs] == [("succeeded", 3, "done")]
    assert [r.status for r in other.runs] == ["training"]

    events = registry.events()
    assert ov.marker == events[-1].id == ov.events[-1].id
    assert [e.id for e in ov.events] == [e.id for e in events[-50:]]
    assert ov.events[-1].message == "git is unreachable"


def test_one_model_and_bounded_lists(registry: Registry, make_artifact: ArtifactFactory) -> None:
    for _ in range(8):
        registry.register_artifact(make_artifact(MODEL))
    registry.register_artifact(make_artifact("other-bot"))
    registry.promote(MODEL, 2, "production")
    for i in range(4):
        registry.create_run(MODEL, f"sha256:{i}")
    ov = registry.overview(MODEL, versions=3, runs=2, events=4)
    (m,) = ov.models
    # The 3 newest, and v2 because production points at it; newest first.
    assert [v.number for v in m.versions] == [8, 7, 6, 2]
    assert m.versions_total == 8
    assert [r.spec_hash for r in m.runs] == ["sha256:3", "sha256:2"]
    assert len(ov.events) == 4 and {e.model for e in ov.events} == {MODEL}
    assert ov.limits == {"versions": 3, "runs": 2, "events": 4}
    assert ov.marker == registry.events()[-1].id  # the registry's, not the model's
    with pytest.raises(NotFound, match=r"no model named 'nope'.*other-bot, support-bot"):
        registry.overview("nope")
    with pytest.raises(ValueError, match="versions=-1"):
        registry.overview(versions=-1)


def test_queries_do_not_grow_with_versions(registry: Registry,
                                           make_artifact: ArtifactFactory) -> None:
    registry.register_artifact(make_artifact(MODEL))
    registry.promote(MODEL, 1, "production")
    with counting(registry) as few:
        registry.overview()
    for _ in range(12):
        registry.register_artifact(make_artifact(MODEL))
        registry.register_artifact(make_artifact("other-bot"))
    registry.promote("other-bot", 3, "production")
    registry.create_run(MODEL, "sha256:x")
    with counting(registry) as many:
        ov = registry.overview(versions=5)
    assert len(many) == len(few) <= 10
    # The 5 newest of each, and the one production points at.
    assert [[v.number for v in m.versions] for m in ov.models] == [
        [12, 11, 10, 9, 8, 3], [13, 12, 11, 10, 9, 1]]


def test_an_empty_registry(registry: Registry) -> None:
    ov = registry.overview()
    assert (ov.models, ov.events, ov.marker, ov.last_reconcile) == ([], [], 0, None)


def test_a_finished_rollout_stays_visible(registry: Registry,
                                          make_artifact: ArtifactFactory) -> None:
    registry.register_artifact(make_artifact(MODEL))
    registry.register_artifact(make_artifact(MODEL))
    registry.promote(MODEL, 1, "production")
    r = registry.start_rollout(MODEL, 2, PLAN)
    registry.advance_rollout(r.id, RolloutChange(
        expected_revision=1, phase="rolled_back", active=False, step=-1, weight=0, failures=1,
        step_started_at=datetime(2026, 1, 1, tzinfo=UTC), reason="error_rate Failed",
        event="rollout.rolled_back", analysis=ANALYSIS[:1]))
    ro = registry.overview().models[0].rollout
    assert ro is not None
    assert (ro.id, ro.phase, ro.active, ro.reason) == (r.id, "rolled_back", False,
                                                       "error_rate Failed")
    assert ro.ended_at is not None and [c.name for c in ro.analysis] == ["error_rate"]


def test_pure_helpers_read_what_registration_and_the_controller_store() -> None:
    report = {"test": {"loss": 1.5, "base_loss": 2.0, "perplexity": 4.5},
              "generation": {"rouge_l": 0.4, "samples": [{"prompt": "x"}]},
              "train": {"last_loss": 1.2, "packing": True}, "gates_passed": True}
    assert key_metrics(report) == {"test.loss": 1.5, "test.base_loss": 2.0,
                                   "test.perplexity": 4.5, "generation.rouge_l": 0.4,
                                   "train.last_loss": 1.2}
    assert key_metrics(None) == {}
    old = gate_summaries({"max_eval_loss": {"value": 1.0, "threshold": 2.0, "passed": True}})
    assert [(g.gate, g.value, g.passed) for g in old] == [("max_eval_loss", 1.0, True)]
    assert gate_summaries(None) == []
    c = check_overview({"name": "error_rate", "verdict": "Failed", "p_value": 0.001})
    assert c.confidence == pytest.approx(0.999)
    assert (c.value, c.canary_n) == (None, 0)
