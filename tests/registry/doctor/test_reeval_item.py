"""`reg doctor`'s "re-evaluation scheduled" item: the check's cases (pure), and its facts
read from a real registry (SQLite and PostgreSQL) with stored `reg eval run`s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recipes.evaluation.regression import compare
from registry.api import Registry
from registry.doctor.findings import Status
from registry.doctor.reeval import ReevalFacts, ServedRun, gather_reeval
from registry.doctor.serving_checks import check_reevaluation
from registry.eval_runs import EvalRunCreate
from tests.support.clock import FakeClock
from tests.support.doctor import state
from tests.support.factories import ArtifactFactory

NOW = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
MODEL = "support-bot"


def _facts(*runs: ServedRun) -> ReevalFacts:
    return ReevalFacts(now=NOW, deployed=list(runs))


def _run(number: int, hours_ago: float, regressed: tuple[str, ...] = (),
         error: str | None = None) -> ServedRun:
    return ServedRun(number, ("production",), NOW - timedelta(hours=hours_ago), regressed,
                     error)


@pytest.mark.parametrize(("facts", "status", "words"), [
    pytest.param(None, Status.warn, "no version of bot is deployed", id="not-deployed"),
    pytest.param(_facts(ServedRun(2, ("canary",))), Status.warn,
                 "v2 (canary) never re-evaluated", id="never"),
    pytest.param(_facts(_run(1, 3)), Status.passed, "v1 (production) re-evaluated 3h 0m ago",
                 id="recent"),
    pytest.param(_facts(_run(1, 72)), Status.warn, "last re-evaluated 3d 0h ago", id="stale"),
    pytest.param(_facts(_run(1, 1, error="HTTP 503: down")), Status.warn,
                 "newest run failed: HTTP 503: down", id="failed"),
    pytest.param(_facts(_run(1, 1), _run(2, 1, ("test.loss",))), Status.fail,
                 "v2 (production)'s newest re-evaluation regressed: test.loss", id="regressed"),
])
def test_the_item(facts: ReevalFacts | None, status: Status, words: str) -> None:
    f = check_reevaluation(state(reeval=facts))
    assert f.status is status and words in f.detail, f.detail
    assert (f.fix == "") is (status is Status.passed)
    if status is Status.warn and facts is not None:
        assert "reg eval run bot:production --every 24h" in f.fix


def test_not_served_passes() -> None:
    f = check_reevaluation(state({"spec.deploy.target": "none"}))
    assert f.status is Status.passed and f.detail == "not served"


def test_facts_come_from_the_registry(registry: Registry, make_artifact: ArtifactFactory,
                                      clock: FakeClock) -> None:
    assert gather_reeval(registry, MODEL).deployed == []  # no model yet
    registry.register_artifact(make_artifact(MODEL))
    registry.register_artifact(make_artifact(MODEL))
    registry.promote(MODEL, 1, "production")
    registry.promote(MODEL, 2, "canary")
    checks = compare({"test.loss": 1.0}, {"test.loss": 2.0}, 0.05)
    registry.record_eval_run(EvalRunCreate(model=MODEL, version=2, gateway="http://gw",
                                           tolerance=0.05, metrics={"test.loss": 2.0},
                                           checks=checks))
    clock.advance(60)
    facts = gather_reeval(registry, MODEL)
    assert [(v.number, v.stages, v.regressed) for v in facts.deployed] == [
        (1, ("production",), ()), (2, ("canary",), ("test.loss",))]
    assert facts.deployed[0].at is None and facts.deployed[1].at is not None
    assert facts.now - facts.deployed[1].at >= timedelta(seconds=60)
