"""`reg rollout ...` as a user types it: real processes against a real registry with registered
versions. The controller's passes run in the test process (a real CanaryController over the
gateway's record source), as `reg serve` would run them beside the commands."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from registry.api import Registry
from registry.settings import Settings
from rollout.canary.controller import CanaryController, RolloutCommands
from rollout.canary.decide import Command
from rollout.canary.records import RequestLog, RequestRecord
from tests.support.cli import cli_env, reg_cmd, reg_fails, reg_ok
from tests.support.factories import ArtifactFactory, RegistryFactory
from tests.support.paths import REPO

MODEL = "support-bot"
ROLLOUT_RECIPE = (
    f"apiVersion: reg/v1\nkind: Recipe\nmetadata:\n  name: {MODEL}\nspec:\n"
    "  base_model:\n    path: ../models/tiny\n  data:\n    sources: [{path: ../data/a.jsonl}]\n"
    "  deploy:\n    rollout:\n      steps: [{weight: 5}, {weight: 20}, {weight: 100}]\n"
    "      interval: 30s\n      min_requests: 20\n      on_inconclusive: rollback\n")


@dataclass
class Probes:
    """The engine's identity check: here every version serves its own weights."""

    def verify(self, model: str, version: int) -> tuple[bool, str]:
        return True, "probe answers equal"


@pytest.fixture
def three_versions(settings: Settings, make_artifact: ArtifactFactory,
                   make_registry: RegistryFactory) -> Registry:
    """v1 in production, v2 plain, v3 trained from a recipe with deploy.rollout."""
    reg = make_registry(clock=lambda: datetime.now(UTC))
    reg.register_artifact(make_artifact(MODEL))
    reg.register_artifact(make_artifact(MODEL))
    reg.register_artifact(make_artifact(MODEL, recipe_text=ROLLOUT_RECIPE))
    reg.promote(MODEL, 1, "production")
    return reg


def rollout_events(reg: Registry) -> list[Any]:
    return [e for e in reg.events(model=MODEL) if e.kind.startswith("rollout.")]


def test_start_status_pause_resume_abort_history(settings: Settings,
                                                 three_versions: Registry) -> None:
    reg = three_versions
    started = json.loads(reg_ok(settings, "rollout", "start", "v2", "--steps", "10,50,100",
                                "--interval", "10s", "--min-requests", "20", "--reason",
                                "try it", "--json").stdout)
    assert (started["candidate"], started["baseline"], started["phase"]) == (2, 1, "pending")
    assert [s["weight"] for s in started["plan"]["steps"]] == [10, 50, 100]
    assert (started["plan"]["interval"], started["plan"]["min_requests"]) == ("10s", 20)
    assert started["plan"]["max_error_rate"] == 0.01  # RolloutSpec's default: v2's recipe has none
    (event,) = rollout_events(reg)
    assert (event.kind, event.actor, event.data["origin"]) == ("rollout.started", "tester",
                                                               "manual")

    # The controller (as inside `reg serve`) verifies v2 and gives it 10%, then analyses.
    log = RequestLog()
    controller = CanaryController(reg, log, Probes())
    controller.run_once()
    controller.run_once()
    now = time.time() + 0.5
    for i in range(40):
        log.append(RequestRecord(now, MODEL, 2, ok=i != 0, latency_s=0.1))
        log.append(RequestRecord(now, MODEL, 1, ok=True, latency_s=0.1))
    time.sleep(0.6)
    controller.run_once()

    status = json.loads(reg_ok(settings, "rollout", "status", "--json").stdout)
    assert (status["phase"], status["step_number"], status["steps"], status["weight"]) == (
        "progressing", 1, 3, 10)
    checks = {a["name"]: a for a in status["analysis"]}
    error = checks["error_rate"]
    assert (error["value"], error["limit"], error["canary_n"], error["baseline_n"]) == (
        pytest.approx(1 / 40), 0.01, 40, 40)
    assert error["verdict"] == "Inconclusive" and 0 < error["p_value"] <= 1
    human = " ".join(reg_ok(settings, "rollout", "status").stdout.split())
    assert "rollout 1 of v2 (candidate) against production v1 (baseline): progressing" in human
    assert "step 1/3, canary weight 10%" in human
    assert "error_rate" in human and "latency_p95" in human

    paused = json.loads(reg_ok(settings, "rollout", "pause", "--reason", "lunch",
                               "--json").stdout)
    assert (paused["phase"], paused["weight"]) == ("paused", 10)
    assert "`reg rollout resume support-bot`" in reg_ok(settings, "rollout", "status").stdout
    resumed = json.loads(reg_ok(settings, "rollout", "resume", "--json").stdout)
    assert resumed["phase"] == "progressing"
    aborted = reg_ok(settings, "rollout", "abort", MODEL, "--reason", "saw errors")
    assert "aborted (canary weight 0%) - aborted: saw errors" in " ".join(aborted.stdout.split())
    policy = reg.get_traffic(MODEL)
    assert policy is not None and policy.weights.get("canary", 0) == 0

    commands = [(e.kind, e.actor, e.data.get("command"), e.message) for e in rollout_events(reg)
                if e.data.get("command")]
    assert commands == [("rollout.paused", "tester", "pause", "paused: lunch"),
                        ("rollout.progressing", "tester", "resume", "resumed: analysing again"),
                        ("rollout.aborted", "tester", "abort", "aborted: saw errors")]

    history = json.loads(reg_ok(settings, "rollout", "history", "--json").stdout)
    assert [(r["candidate"], r["phase"], r["reason"], r["active"]) for r in history] == [
        (2, "aborted", "aborted: saw errors", False)]
    table = " ".join(reg_ok(settings, "rollout", "history").stdout.split())
    assert "aborted: saw errors" in table and "manual" in table

    # `reg history` shows the rollout's steps beside the stage changes they made.
    stages = json.loads(reg_ok(settings, "history", "--json").stdout)
    assert [e["kind"] for e in stages["rollout_events"]] == [
        "rollout.started", "rollout.verifying", "rollout.progressing", "rollout.paused",
        "rollout.progressing", "rollout.aborted"]
    assert [e["data"].get("weight") for e in stages["rollout_events"]][1:] == [
        0, 10, 10, 10, 0]
    timeline = " ".join(reg_ok(settings, "history").stdout.split())
    assert "Rollout steps" in timeline and "aborted: saw errors" in timeline

    # Ended: a command that cannot apply says so, and changes nothing.
    before = len(reg.events(model=MODEL))
    again = reg_fails(settings, "rollout", "pause")
    assert "support-bot has no active rollout" in again.stderr
    assert "`reg rollout history`" in again.stderr
    assert len(reg.events(model=MODEL)) == before


def test_start_takes_the_versions_recipe_rollout_with_flags_over_it(
    settings: Settings, three_versions: Registry
) -> None:
    plan = json.loads(reg_ok(settings, "rollout", "start", "v3", "--alpha", "0.02",
                             "--json").stdout)["plan"]
    assert [s["weight"] for s in plan["steps"]] == [5, 20, 100]
    assert (plan["interval"], plan["min_requests"], plan["on_inconclusive"], plan["alpha"]) == (
        "30s", 20, "rollback", 0.02)


def test_a_newer_start_supersedes_the_active_rollout(settings: Settings,
                                                     three_versions: Registry) -> None:
    reg_ok(settings, "rollout", "start", "v2", "--steps", "10,100")
    out = " ".join(reg_ok(settings, "rollout", "start", "v3").stdout.split())
    assert "Superseded rollout 1 of v2." in out
    assert "Rollout 2 of support-bot@v3 against production v1 started" in out
    rows = three_versions.list_rollouts(MODEL)
    assert [(r.candidate, r.phase, r.reason) for r in rows] == [
        (3, "pending", ""), (2, "aborted", "aborted: superseded by v3")]


@pytest.mark.parametrize(("args", "message", "hint"), [
    pytest.param(["--steps", "50,10"], "--steps '50,10': step weights must increase",
                 "e.g. --steps 5,25,50,100", id="steps-decreasing"),
    pytest.param(["--steps", "ten,50"], "--steps 'ten,50': not a list of whole percentages",
                 "e.g. --steps 5,25,50,100", id="steps-not-numbers"),
    pytest.param(["--steps", "0,50"], "--steps '0,50': Input should be greater than or equal "
                 "to 1", "e.g. --steps 5,25,50,100", id="steps-zero"),
    pytest.param(["--steps", "10", "--max-error-rate", "2"],
                 "--max-error-rate 2.0: Input should be less than or equal to 1",
                 "e.g. --max-error-rate 0.01", id="error-rate-above-one"),
    pytest.param(["--steps", "10", "--interval", "soon"], "--interval 'soon': String should "
                 "match pattern", "e.g. --interval 10s", id="interval-not-a-duration"),
    pytest.param(["--steps", "10", "--on-inconclusive", "wait"],
                 "--on-inconclusive 'wait': Input should be 'pause' or 'rollback'",
                 "e.g. --on-inconclusive pause", id="on-inconclusive"),
    pytest.param(["--steps", "10", "--max-latency-ratio", "0.5"],
                 "--max-latency-ratio 0.5: Input should be greater than 1",
                 "e.g. --max-latency-ratio 1.25", id="latency-ratio"),
    pytest.param([], "the recipe of support-bot@v2 has no deploy.rollout, so --steps must be "
                 "given", "e.g. --steps 5,25,50,100", id="no-steps-anywhere"),
])
def test_a_bad_option_names_it_and_a_fix_and_writes_nothing(
    settings: Settings, three_versions: Registry, args: list[str], message: str, hint: str
) -> None:
    events_before = len(three_versions.events(model=MODEL))
    cp = reg_fails(settings, "rollout", "start", "v2", *args)
    assert cp.returncode == 1
    text = " ".join(cp.stderr.split())
    assert f"Error: {message}" in text, cp.stderr
    assert "Hint:" in text and hint in text, cp.stderr
    assert three_versions.list_rollouts(MODEL) == []
    assert len(three_versions.events(model=MODEL)) == events_before


def test_a_refused_start_names_the_reason(settings: Settings, three_versions: Registry) -> None:
    cp = reg_fails(settings, "rollout", "start", "v1", "--steps", "10,100")
    assert "production of support-bot already serves v1" in cp.stderr
    assert three_versions.list_rollouts(MODEL) == []


def test_status_watch_follows_the_rollout_until_it_ends(settings: Settings,
                                                        three_versions: Registry) -> None:
    reg_ok(settings, "rollout", "start", "v2", "--steps", "10,100")
    watcher = subprocess.Popen(reg_cmd("rollout", "status", "--watch", "--json"), cwd=REPO,
                               env=cli_env(settings, REG_ACTOR="tester"), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(2.0)
        assert watcher.poll() is None, watcher.communicate()  # still watching: not ended
        RolloutCommands(three_versions).command(MODEL, Command.abort, actor="tester",
                                                reason="enough")
        out, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 1, err  # it ended, and not in production
    final = json.loads(out)
    assert (final["phase"], final["reason"]) == ("aborted", "aborted: enough")


def test_status_without_rollouts_says_how_to_start_one(settings: Settings,
                                                       three_versions: Registry) -> None:
    cp = reg_fails(settings, "rollout", "status")
    assert "support-bot has no rollouts yet" in cp.stderr
    assert "`reg rollout start support-bot VERSION`" in cp.stderr


def test_run_needs_prometheus(settings: Settings, three_versions: Registry) -> None:
    cp = reg_fails(settings, "rollout", "run")
    assert "$REG_PROMETHEUS_URL is not set" in cp.stderr
    assert "let `reg serve` host the controller" in " ".join(cp.stderr.split())
    bad = reg_fails(settings, "rollout", "run", "--interval", "0s",
                    REG_PROMETHEUS_URL="http://127.0.0.1:9")
    assert "--interval '0s' is not a duration above 0" in bad.stderr
    assert three_versions.list_rollouts(MODEL) == []


def test_run_passes_under_the_canary_lease_and_waits_for_the_engine(
    settings: Settings, three_versions: Registry
) -> None:
    """One pass at a time: the canary stage moves to the candidate, then the identity check
    finds no gateway to ask, which is recorded and retried, never a roll back."""
    reg = three_versions
    env = {"REG_PROMETHEUS_URL": "http://127.0.0.1:9", "REG_GATEWAY_URL": "http://127.0.0.1:9"}
    idle = reg_ok(settings, "rollout", "run", **env)
    assert "No active rollout." in idle.stdout
    reg_ok(settings, "rollout", "start", "v2", "--steps", "10,100")
    (first,) = json.loads(reg_ok(settings, "rollout", "run", "--json", **env).stdout)
    assert (first["phase"], first["reason"]) == (
        "verifying", "canary stage -> candidate at 0%; verifying")
    assert reg.stage_map(MODEL)["canary"].number == 2
    (second,) = json.loads(reg_ok(settings, "rollout", "run", "--json", **env).stdout)
    assert second["phase"] == "verifying"
    assert second["reason"].startswith("error: cannot reach the gateway at http://127.0.0.1:9")
    (error,) = [e for e in reg.events(model=MODEL) if e.kind == "rollout.error"]
    assert "cannot reach the gateway" in error.message
    assert reg.leases.get("canary") is None  # held for each pass only
