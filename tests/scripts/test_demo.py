"""`make demo`'s pure parts (scripts/demo_lib.py, scripts/demo_traffic.py) against the real
pieces they depend on: the example workspace and the recipe loader, RolloutSpec, the
gateway's metrics as prometheus_client writes them, a real registry's rollout events.

The demo itself trains and serves for minutes, so it is not run here; these keep its
edits, its plan and its reading of the commands' JSON from drifting silently.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from recipes.identity import spec_hash
from recipes.loading.loader import load_recipe
from recipes.scaffold.example import write_example_workspace
from recipes.schema import RolloutSpec
from registry.api import Registry
from registry.settings import Settings
from rollout.canary.analysis import CheckResult, Verdict
from rollout.canary.controller import RolloutCommands
from rollout.canary.decide import Command
from scripts import demo_lib as lib
from scripts.demo_traffic import Pacer, Tally
from serving.gateway.metrics import Metrics
from tests.support.factories import ArtifactFactory


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    return write_example_workspace(tmp_path_factory.mktemp("demo") / "ws",
                                   model_from=tiny_model_dir)


def _read(ws: Path, rel: str) -> str:
    return (ws / rel).read_text(encoding="utf-8")


def test_the_plan_is_a_valid_rollout_with_the_defaults_and_a_reachable_first_step() -> None:
    spec = RolloutSpec.model_validate(lib.PLAN)
    defaults = RolloutSpec.model_validate({"steps": lib.PLAN["steps"]})
    unset = set(RolloutSpec.model_fields) - set(lib.PLAN)
    assert unset >= {"max_error_rate", "max_latency_ratio", "alpha", "failure_limit"}
    assert all(getattr(spec, f) == getattr(defaults, f) for f in unset)
    # The users send RATE a second; the first step must reach its sample with room to spare.
    assert lib.needed_rate(lib.PLAN) == pytest.approx(
        spec.min_requests / (spec.steps[0].weight / 100 * spec.interval_s))
    assert lib.needed_rate(lib.PLAN) * 2 <= lib.RATE


def test_v2s_edit_keeps_the_recipe_valid_changes_its_hash_and_carries_the_plan(
    workspace: Path, tmp_path: Path,
) -> None:
    import shutil

    ws = Path(shutil.copytree(workspace, tmp_path / "ws"))
    recipe = ws / lib.RECIPE
    v1 = load_recipe(recipe)
    assert v1.recipe.spec.deploy.rollout is None  # v1 is promoted by hand, not rolled out
    h1 = spec_hash(v1)  # the hash reads the data files: before they change
    rows_before = _read(ws, lib.DATA).splitlines()

    (ws / lib.DATA).write_text(lib.new_answers(_read(ws, lib.DATA)), encoding="utf-8")
    recipe.write_text(lib.with_rollout(_read(ws, lib.RECIPE)), encoding="utf-8")
    v2 = load_recipe(recipe)
    assert v2.recipe.spec.deploy.rollout == RolloutSpec.model_validate(lib.PLAN)
    h2 = spec_hash(v2)
    assert h2 != h1
    rows = [json.loads(line) for line in _read(ws, lib.DATA).splitlines()]
    assert len(rows) == len(rows_before)
    answers = [m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant"]
    assert answers and all(a.startswith("charlie") for a in answers)

    recipe.write_text(lib.fewer_steps(_read(ws, lib.RECIPE)), encoding="utf-8")
    v3 = load_recipe(recipe)
    assert v3.recipe.spec.training.max_steps == 100
    assert v3.recipe.spec.deploy.rollout == v2.recipe.spec.deploy.rollout
    assert spec_hash(v3) not in (h1, h2)


@pytest.mark.parametrize(("edit", "text", "match"), [
    pytest.param(lib.with_rollout, "spec: {}\n", "no `deploy:`", id="rollout-no-deploy"),
    pytest.param(lib.with_rollout, lib.with_rollout("  deploy:\n    target: vllm\n"),
                 "already has a deploy.rollout", id="rollout-twice"),
    pytest.param(lib.fewer_steps, "    max_steps: 50\n", "max_steps: 250", id="steps-moved"),
    pytest.param(lib.new_answers, '{"messages": [{"role": "user", "content": "hi"}]}\n',
                 "no answer starting 'alpha'", id="no-alpha"),
])
def test_an_example_the_demo_no_longer_fits_is_an_error_naming_what_it_looked_for(
    edit: Any, text: str, match: str,
) -> None:
    with pytest.raises(lib.EditError, match=match):
        edit(text)


def test_requests_per_version_sums_the_gateways_counter_over_stages_and_codes() -> None:
    m = Metrics()
    m.requests.labels("support-bot", "v1", "production", "200").inc(40)
    m.requests.labels("support-bot", "v2", "canary", "200").inc(7)
    m.requests.labels("support-bot", "v2", "production", "200").inc(3)
    m.requests.labels("support-bot", "v3", "canary", "500").inc(4)
    m.requests.labels("support-bot", "v3", "canary", "200").inc(6)
    m.requests.labels("faq-bot", "v1", "production", "200").inc(99)
    got = lib.requests_per_version(generate_latest(m.registry).decode())
    assert got == {"v1": lib.Served(40, 0), "v2": lib.Served(10, 0), "v3": lib.Served(6, 4)}
    assert list(got) == ["v1", "v2", "v3"]


@pytest.fixture
def registry(tmp_path: Path, make_artifact: ArtifactFactory) -> Iterator[Registry]:
    with Registry(Settings.for_home(tmp_path / "home")) as reg:
        for _ in range(3):
            reg.register_artifact(make_artifact(lib.MODEL))
        reg.promote(lib.MODEL, 1, "production")
        yield reg


def _events(reg: Registry) -> list[dict[str, Any]]:
    """As `reg events --model M --json` prints them: newest first, JSON values."""
    rows = reg.events(model=lib.MODEL)
    return sorted((e.model_dump(mode="json") for e in rows), key=lambda e: -int(e["id"]))


def test_the_watch_finds_the_candidates_rollout_and_its_events_in_order(
    registry: Registry,
) -> None:
    commands = RolloutCommands(registry)
    spec = RolloutSpec.model_validate(lib.PLAN)
    first = commands.start(lib.MODEL, 2, spec, actor="tester", reason="first")
    commands.command(lib.MODEL, Command.abort, actor="tester", reason="not this one")
    second = commands.start(lib.MODEL, 3, spec, actor="tester", reason="second")
    commands.command(lib.MODEL, Command.abort, actor="tester", reason="enough")
    events = _events(registry)

    assert lib.rollout_of(events, 2) == first.id
    assert lib.rollout_of(events, 3) == second.id
    assert lib.rollout_of(events, 1) is None
    mine = lib.rollout_events(events, second.id)
    kinds = [e["kind"] for e in mine]
    assert kinds == ["rollout.started", "rollout.aborted"]  # none of the first rollout's
    assert kinds[-1] in lib.ENDINGS
    assert all(e["data"]["rollout"] == second.id for e in mine)
    assert [lib.event_seconds(e, mine[0]) >= 0 for e in mine] == [True] * len(mine)

    started = lib.event_line(mine[0], 0.0)
    assert "started" in started and "v3 against v1, 3 steps" in started
    assert "aborted" in lib.event_line(mine[-1], 1.5) and "1.5s" in lib.event_line(mine[-1], 1.5)


def test_an_event_line_shows_each_checks_value_limit_and_sample() -> None:
    check = dataclasses.asdict(CheckResult("error_rate", Verdict.failed, 0.2045, 0.01, 44, 186,
                                           2.2e-8, "above the ceiling"))
    check["verdict"] = Verdict.failed.value  # as the controller stores it
    event = {"id": 9, "kind": "rollout.rolled_back", "at": "2026-01-01T00:00:00Z",
             "data": {"rollout": 1, "step": 0, "weight": 0, "analysis": [check]}}
    line = lib.event_line(event, 8.2)
    assert "rolled_back" in line and "step 1, canary 0%" in line
    assert "errors 0.204 (limit 0.01, n 44/186) Failed" in line
    verifying = {**event, "kind": "rollout.verifying", "data": {"rollout": 1, "step": -1,
                                                                "weight": 0}}
    assert "canary 0%" in lib.event_line(verifying, 0.5)
    assert "step" not in lib.event_line(verifying, 0.5).split("verifying")[1]


def test_the_summary_has_a_row_per_version_with_its_last_rollout_and_counts() -> None:
    versions = [{"number": 1, "stages": []}, {"number": 2, "stages": ["production"]},
                {"number": 3, "stages": []}]
    rollouts = [{"id": 3, "candidate": 3, "phase": "rolled_back"},
                {"id": 2, "candidate": 2, "phase": "succeeded"},
                {"id": 1, "candidate": 2, "phase": "aborted"}]
    served = {"v1": lib.Served(10, 0), "v3": lib.Served(6, 4)}
    users = {"v1": {"ok": 10, "errors": 0, "sample": "alpha: find refund"}}
    rows = lib.summary_rows(versions, rollouts, served, users)
    assert [(r.version, r.stages, r.rollout, r.served, r.sample) for r in rows] == [
        ("v1", "-", "-", lib.Served(10, 0), "alpha: find refund"),
        ("v2", "production", "succeeded (#2)", lib.Served(), "-"),
        ("v3", "-", "rolled_back (#3)", lib.Served(6, 4), "-"),
    ]
    assert lib.rollback_of(rollouts) == rollouts[0]
    assert lib.rollback_of(rollouts[1:]) is None


def test_the_users_tally_counts_by_answering_version_and_keeps_a_first_sample() -> None:
    tally = Tally(started=0.0)
    tally.record("v1", 200, " alpha: find refund ")
    tally.record("v1", 200, "alpha: other")
    tally.record("v3", 500)
    tally.record("", 0)
    out = tally.as_json(now=2.0)
    assert out["requests"] == 4 and out["rate"] == 2.0 and out["unanswered"] == 1
    assert out["statuses"] == {"200": 2, "500": 1, "0": 1}
    assert out["by_version"] == {"v1": {"ok": 2, "errors": 0, "sample": "alpha: find refund"},
                                 "v3": {"ok": 0, "errors": 1, "sample": ""}}


def test_the_pacer_spaces_sends_by_the_rate_and_does_not_burst_after_a_stall() -> None:
    pacer = Pacer(10.0, start=100.0)
    assert [pacer.slot(100.0) for _ in range(3)] == pytest.approx([100.0, 100.1, 100.2])
    # Five seconds with no thread asking: the next sends are paced again from now.
    later = [pacer.slot(105.0) for _ in range(3)]
    assert later == pytest.approx([105.0, 105.0, 105.1])
