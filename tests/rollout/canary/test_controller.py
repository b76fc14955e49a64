"""The canary controller stepped one pass at a time against a real registry.

Traffic is recorded in the controller's real gateway source (RequestLog) as the gateway
would record it; the clock is a fake one, moved by the test; a probe mismatch is a fault
the test injects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest

from recipes.core.errors import RegError
from recipes.schema import RolloutSpec
from registry.api import Registry
from rollout.canary.analysis import Window
from rollout.canary.controller import CanaryController
from rollout.canary.decide import Command
from rollout.canary.records import RequestLog, RequestRecord
from tests.support.clock import FakeClock
from tests.support.factories import ArtifactFactory

MODEL = "support-bot"


@dataclass
class Probes:
    """The identity check, with a mismatch the test can inject."""

    mismatch: dict[int, str] = field(default_factory=dict)

    def verify(self, model: str, version: int) -> tuple[bool, str]:
        if version in self.mismatch:
            return False, self.mismatch[version]
        return True, "3/3 probe answers equal"


@dataclass
class World:
    registry: Registry
    log: RequestLog
    clock: FakeClock
    probes: Probes
    controller: CanaryController
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(3))

    def traffic(self, seconds: int, rps: int = 200, bad: dict[int, float] | None = None,
                slow: dict[int, float] | None = None) -> None:
        """Requests split by the stored policy, one second at a time, then a pass each."""
        for _ in range(seconds):
            policy = self.registry.get_traffic(MODEL)
            canary_share = 0 if policy is None else policy.weights.get("canary", 0)
            stages = self.registry.stage_map(MODEL)
            now = self.clock.advance(1).timestamp()
            for _ in range(rps):
                stage = "canary" if self.rng.random() * 100 < canary_share else "production"
                version = stages[stage].number
                ok = self.rng.random() >= (bad or {}).get(version, 0.0)
                latency = float(self.rng.lognormal(np.log(0.1), 0.2)) + (slow or {}).get(
                    version, 0.0)
                self.log.append(RequestRecord(now, MODEL, version, ok, latency))
            self.controller.run_once()

    def rollout(self) -> Any:
        return self.registry.list_rollouts(MODEL, limit=1)[0]


@pytest.fixture
def world(registry: Registry, make_artifact: ArtifactFactory, clock: FakeClock) -> World:
    for _ in range(3):
        registry.register_artifact(make_artifact(MODEL))
    registry.promote(MODEL, 1, "production")
    log, probes = RequestLog(), Probes()
    return World(registry, log, clock, probes,
                 CanaryController(registry, log, probes, clock=clock))


def plan(**overrides: Any) -> RolloutSpec:
    return RolloutSpec.model_validate({"steps": [{"weight": w} for w in (5, 25, 50, 100)],
                                       "interval": "10s", **overrides})


def test_a_good_candidate_goes_to_production_with_every_step_recorded(world: World) -> None:
    world.controller.start(MODEL, 2, plan())
    world.traffic(60)
    r = world.rollout()
    assert (r.phase, r.active) == ("succeeded", False)
    assert world.registry.stage_map(MODEL)["production"].number == 2
    policy = world.registry.get_traffic(MODEL)
    assert policy is not None and dict(policy.weights) == {"production": 100}
    kinds = [e.kind for e in world.registry.events(model=MODEL) if e.kind.startswith("rollout")]
    assert kinds[:3] == ["rollout.started", "rollout.verifying", "rollout.progressing"]
    assert kinds.count("rollout.step") == 3 and kinds[-1] == "rollout.succeeded"
    weights = [e.data["weight"] for e in world.registry.events(model=MODEL)
               if e.kind in ("rollout.progressing", "rollout.step")]
    assert weights == [5, 25, 50, 100]


def test_twenty_percent_errors_roll_back_and_the_bad_version_gets_no_more_traffic(
    world: World,
) -> None:
    world.controller.start(MODEL, 2, plan())
    world.traffic(30, bad={2: 0.2})
    r = world.rollout()
    assert r.phase == "rolled_back" and r.step == 0
    assert any(a["name"] == "error_rate" and a["verdict"] == "Failed" for a in r.analysis)
    assert world.registry.stage_map(MODEL)["production"].number == 1
    policy = world.registry.get_traffic(MODEL)
    assert policy is not None and policy.weights.get("canary", 0) == 0
    event = [e for e in world.registry.events(model=MODEL) if e.kind == "rollout.rolled_back"]
    assert "error_rate Failed" in event[0].message
    served_after = [rec for rec in world.log._by_model[MODEL]
                    if rec.version == 2 and rec.at > r.ended_at.timestamp()]
    assert served_after == []


def test_a_rollback_drains_the_candidate_before_the_verdict_commits(world: World) -> None:
    drained: list[tuple[str, int, bool]] = []

    def drain(model: str, version: int) -> None:  # what the hosting gateway is told
        drained.append((model, version, world.rollout().active))

    world.controller.drain = drain
    world.controller.start(MODEL, 2, plan())
    world.traffic(30, bad={2: 0.2})
    assert world.rollout().phase == "rolled_back"
    assert drained == [(MODEL, 2, True)]  # once, and while the rollout was still active


def test_added_latency_rolls_back_on_the_latency_check(world: World) -> None:
    world.controller.start(MODEL, 2, plan())
    world.traffic(30, slow={2: 0.2})
    r = world.rollout()
    assert r.phase == "rolled_back"
    failed = [a["name"] for a in r.analysis if a["verdict"] == "Failed"]
    assert failed == ["latency_p95"]


def test_a_probe_mismatch_never_gets_traffic(world: World) -> None:
    world.probes.mismatch[2] = "'alpha reset' != 'bravo reset'"
    world.controller.start(MODEL, 2, plan())
    world.traffic(3)
    r = world.rollout()
    assert r.phase == "rolled_back" and "'alpha reset' != 'bravo reset'" in r.reason
    assert all(rec.version == 1 for rec in world.log._by_model[MODEL])


def test_a_mismatch_after_an_engine_restart_rolls_back_a_serving_candidate(
    world: World,
) -> None:
    world.controller.start(MODEL, 2, plan())
    world.traffic(3)
    assert world.rollout().phase == "progressing"
    world.probes.mismatch[2] = "probe 1: the artifact recorded 'alpha', the engine answered 'x'"
    world.traffic(1)
    r = world.rollout()
    assert r.phase == "rolled_back" and "no longer serves the candidate's weights" in r.reason
    policy = world.registry.get_traffic(MODEL)
    assert policy is not None and policy.weights.get("canary", 0) == 0


@dataclass
class SlowProbes(Probes):
    """Asking the engine the probes takes ``seconds`` the first time (a busy CPU engine)."""

    clock: FakeClock | None = None
    seconds: float = 0.0
    asked: set[int] = field(default_factory=set)

    def verify(self, model: str, version: int) -> tuple[bool, str]:
        if self.clock is not None and version not in self.asked:
            self.asked.add(version)
            self.clock.advance(self.seconds)
        return super().verify(model, version)


def test_the_first_step_window_opens_after_a_slow_identity_check(world: World) -> None:
    # The window opens when the step's weight is written, not when the pass began: the
    # seconds spent asking the engine had no canary traffic, and counting them would cut
    # the first step short of its minimum sample (inconclusive: paused).
    probes = SlowProbes(clock=world.clock, seconds=6.0)
    world.controller.identity = probes
    world.controller.start(MODEL, 2, plan(min_requests=50))
    world.controller.run_once()  # pending -> verifying
    world.controller.run_once()  # the probes take 6 s, then step 1 at 5%
    checked = world.clock.now
    r = world.rollout()
    assert (r.phase, r.weight) == ("progressing", 5)
    assert r.step_started_at >= checked - timedelta(milliseconds=5)
    world.traffic(10, rps=200)  # 5% of 200 req/s for 10 s: ~100 canary requests
    r = world.rollout()
    assert (r.phase, r.weight) == ("progressing", 25), r.reason


@dataclass
class SlowSource:
    """The gateway's records, with the first step-deadline analysis taking ``seconds`` (the
    first analysis with data imports scipy, seconds on a busy machine)."""

    log: RequestLog
    clock: FakeClock
    seconds: float

    def window(self, model: str, canary: int, baseline: int, since: datetime,
               until: datetime, baseline_since: datetime | None = None) -> Window:
        w = self.log.window(model, canary, baseline, since, until, baseline_since)
        if self.seconds and w.seconds >= 10:
            self.clock.advance(self.seconds)
            self.seconds = 0
        return w


def test_the_next_step_window_opens_after_a_slow_analysis(world: World) -> None:
    world.controller.source = SlowSource(world.log, world.clock, seconds=4.0)
    world.controller.start(MODEL, 2, plan())
    while world.rollout().weight != 25:
        world.traffic(1)
    # The 25% step's window opens when its weight is written, after the analysis that
    # passed the 5% step, not when that pass began (4 s without 25% of the traffic).
    assert world.rollout().step_started_at >= world.clock.now - timedelta(seconds=1)


def test_too_little_traffic_pauses_at_the_deadline_then_resumes(world: World) -> None:
    world.controller.start(MODEL, 2, plan(on_inconclusive="pause"))
    world.traffic(12, rps=20)
    assert world.rollout().phase == "paused"
    world.controller.command(MODEL, Command.resume, actor="alice", reason="more traffic now")
    world.traffic(40)
    assert world.rollout().phase == "succeeded"


def test_approval_waits_for_a_person(world: World) -> None:
    world.controller.start(MODEL, 2, plan(approval=True))
    world.traffic(60)
    r = world.rollout()
    assert (r.phase, r.weight) == ("awaiting_approval", 50)
    world.controller.command(MODEL, Command.promote, actor="alice")
    assert world.rollout().phase == "succeeded"
    assert world.registry.stage_map(MODEL)["production"].number == 2


def test_abort_by_hand_restores_the_canary(world: World) -> None:
    world.registry.promote(MODEL, 3, "canary")
    world.controller.start(MODEL, 2, plan())
    world.traffic(3)
    world.controller.command(MODEL, Command.abort, actor="alice", reason="game day")
    r = world.rollout()
    assert r.phase == "aborted" and "game day" in r.reason
    assert world.registry.stage_map(MODEL)["canary"].number == 3


def test_a_newer_version_supersedes_the_rollout(world: World) -> None:
    world.controller.start(MODEL, 2, plan())
    world.traffic(3)
    world.controller.start(MODEL, 3, plan())
    first, second = reversed(world.registry.list_rollouts(MODEL))
    assert (first.phase, "superseded by v3" in first.reason) == ("aborted", True)
    assert (second.candidate, second.phase) == (3, "pending")
    world.traffic(60)
    assert world.registry.stage_map(MODEL)["production"].number == 3


def test_a_refused_effect_aborts_with_the_reason(world: World,
                                                 make_artifact: ArtifactFactory) -> None:
    v4 = world.registry.register_artifact(make_artifact(MODEL, method="ia3", deploy={
        "deploy_target": "vllm"}))
    world.controller.start(MODEL, v4.number, plan())
    world.traffic(2)
    r = world.rollout()
    assert r.phase == "aborted" and "cannot serve" in r.reason


def test_a_restarted_controller_resumes_at_the_same_step(world: World) -> None:
    world.controller.start(MODEL, 2, plan())
    world.traffic(14)
    before = world.rollout()
    assert before.phase == "progressing" and before.step >= 1
    world.controller = CanaryController(world.registry, world.log, world.probes,
                                        clock=world.clock)
    world.controller.run_once()
    after = world.rollout()
    assert (after.step, after.weight) == (before.step, before.weight)
    world.traffic(60)
    assert world.rollout().phase == "succeeded"


def test_commands_on_no_rollout_say_what_to_do(world: World) -> None:
    with pytest.raises(RegError, match="has no active rollout") as e:
        world.controller.command(MODEL, Command.pause, actor="alice")
    assert e.value.hint is not None and "reg rollout start" in e.value.hint


def test_several_models_roll_out_independently(world: World,
                                               make_artifact: ArtifactFactory) -> None:
    for _ in range(2):
        world.registry.register_artifact(make_artifact("faq-bot"))
    world.registry.promote("faq-bot", 1, "production")
    world.controller.start(MODEL, 2, plan())
    world.controller.start("faq-bot", 2, plan())
    world.traffic(2)
    world.controller.command("faq-bot", Command.pause, actor="alice")
    world.traffic(60)
    assert world.rollout().phase == "succeeded"
    assert world.registry.list_rollouts("faq-bot")[0].phase == "paused"


def test_a_start_that_would_be_refused_supersedes_nothing(world: World) -> None:
    world.controller.start(MODEL, 2, plan())
    world.traffic(3)
    with pytest.raises(RegError, match="already serves v1"):
        world.controller.start(MODEL, 1, plan())
    assert world.rollout().candidate == 2 and world.rollout().active
