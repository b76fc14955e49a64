"""Re-evaluations stored with their version (`reg eval run`'s record), on a real SQLite and
PostgreSQL registry: appended, listed oldest first, each version's newest, an audit event."""

from __future__ import annotations

import pytest

from recipes.evaluation.regression import compare
from registry.api import Registry
from registry.errors import NotFound
from registry.eval_runs import EvalRunCreate
from tests.support.clock import FakeClock
from tests.support.factories import ArtifactFactory

MODEL = "support-bot"
GATEWAY = "http://127.0.0.1:8000"


@pytest.fixture
def reg(registry: Registry, make_artifact: ArtifactFactory) -> Registry:
    registry.register_artifact(make_artifact(MODEL))
    registry.register_artifact(make_artifact(MODEL))
    return registry


def _run(version: int, loss: float, *, error: str | None = None) -> EvalRunCreate:
    measured = {} if error else {"test.loss": loss, "generation.exact_match": 0.5}
    checks = compare({"test.loss": 1.0, "generation.exact_match": 0.5}, measured, 0.05)
    return EvalRunCreate(model=MODEL, version=version, gateway=GATEWAY, tolerance=0.05,
                         metrics=measured, checks=checks,
                         skipped={"test.base_loss": "measures the base model"}, requests=3,
                         error=error)


def test_runs_are_stored_with_their_flags_and_listed(reg: Registry, clock: FakeClock) -> None:
    first = reg.record_eval_run(_run(1, 1.0))
    clock.advance(3600)
    second = reg.record_eval_run(_run(1, 1.5))
    reg.record_eval_run(_run(2, 0.0, error="APIConnectionError: no gateway"))

    assert first.regressed_metrics == [] and second.regressed_metrics == ["test.loss"]
    assert second.describe() == "REGRESSED: test.loss"
    runs = reg.eval_runs(MODEL, 1)
    assert [r.id for r in runs] == [first.id, second.id]
    assert runs[1].metrics == {"test.loss": 1.5, "generation.exact_match": 0.5}
    assert runs[1].checks[0].metric == "test.loss" and runs[1].checks[0].allowed == 1.05
    assert runs[1].skipped == {"test.base_loss": "measures the base model"}
    assert (runs[1].at - runs[0].at).total_seconds() >= 3600
    assert [r.id for r in reg.eval_runs(MODEL, 1, limit=1)] == [second.id]
    latest = reg.latest_eval_runs(MODEL)
    assert latest[1].id == second.id and latest[2].error == "APIConnectionError: no gateway"
    assert latest[2].describe().startswith("failed:")

    events = [e for e in reg.events(model=MODEL) if e.kind == "version.eval_run"]
    assert [e.data["regressed"] for e in events] == [[], ["test.loss"], []]
    assert events[1].version == 1 and events[1].data["gateway"] == GATEWAY


def test_an_unknown_version_or_model_is_refused(reg: Registry) -> None:
    with pytest.raises(NotFound, match=r"support-bot has no v9 \(versions: v1, v2\)"):
        reg.record_eval_run(_run(9, 1.0))
    with pytest.raises(NotFound, match="no model named 'nobody'"):
        reg.eval_runs("nobody")
    assert reg.eval_runs(MODEL) == []
