"""Rollouts against the real engine, driven by the canary controller the gateway hosts.

The session stack (tests/serving/conftest.py): a real SQLite registry, the gateway, its
supervisor and ONE vLLM, with the controller `reg serve` hosts running beside them (a
pass every 0.25 s, under the shared lease). Several users send traffic at once through
the official openai client; faults are injected through the gateway's admin API, as
`reg fault` does. Plans use short intervals and small minimum samples, so each rollout
takes seconds. Every test starts from v1 in production with no canary traffic and leaves
no rollout active and no fault injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from recipes.schema import RolloutSpec
from registry.api import Registry
from registry.rollouts import RolloutPublic
from registry.tables import EventPublic
from rollout.canary.controller import RolloutCommands
from rollout.canary.decide import Command
from serving.gateway.rollouts import RolloutHost
from tests.support.gateway import Server
from tests.support.live_stack import ADMIN_TOKEN, MODEL, open_registry, set_baseline
from tests.support.traffic import Answer, Traffic

pytestmark = pytest.mark.slow

CANDIDATE = 2  # v2 ("bravo"), against v1 ("alpha") in production
ENDED = {"succeeded", "rolled_back", "aborted"}


def plan(*weights: int, **overrides: Any) -> RolloutSpec:
    return RolloutSpec.model_validate({"steps": [{"weight": w} for w in weights],
                                       "interval": "3s", "min_requests": 10, **overrides})


@dataclass
class World:
    stack: Server
    registry: Registry

    @property
    def commands(self) -> RolloutCommands:
        return RolloutCommands(self.registry)

    def start(self, spec: RolloutSpec, version: int = CANDIDATE) -> int:
        return self.commands.start(MODEL, version, spec, actor="tester").id

    def traffic(self) -> Traffic:
        return Traffic(self.stack.url, MODEL)

    def wait(self, rid: int, phases: set[str], timeout_s: float = 90.0) -> RolloutPublic:
        deadline = time.monotonic() + timeout_s
        while (row := self.registry.get_rollout(rid)).phase not in phases:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rollout {rid} is {row.phase} (step {row.step}, weight "
                                   f"{row.weight}), not {sorted(phases)}: {row.reason}; "
                                   f"{[e.message for e in self.events(rid)][-4:]}")
            time.sleep(0.1)
        return row

    def events(self, rid: int) -> list[EventPublic]:
        return [e for e in self.registry.events(model=MODEL)
                if e.kind.startswith("rollout.") and e.data.get("rollout") == rid]

    def fault(self, version: int, **body: Any) -> None:
        r = httpx.put(f"{self.stack.url}/admin/faults/{MODEL}/v{version}", json=body,
                      headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
        assert r.status_code == 200, r.text

    def synced(self, timeout_s: float = 5.0) -> None:
        """Until the gateway's routing follows the registry's latest change."""
        want = self.registry.change_marker()
        deadline = time.monotonic() + timeout_s
        while self.stack.gateway.state.catalogue.marker < want:
            assert time.monotonic() < deadline, "the gateway did not catch up"
            time.sleep(0.02)

    def reset(self) -> None:
        if self.registry.list_rollouts(MODEL, active=True):
            self.commands.command(MODEL, Command.abort, actor="tester", reason="test reset")
        gw = self.stack.gateway
        for model, version in list(gw.faults.all()):
            gw.faults.clear(model, version)
        self.registry.promote(MODEL, 1, "production", reason="test reset")
        self.registry.set_traffic(MODEL, {"production": 100}, None, reason="test reset")
        self.synced()


@pytest.fixture
def world(stack: Server, registry: Registry) -> Iterator[World]:
    w = World(stack, registry)
    w.reset()
    yield w
    w.reset()
    set_baseline(registry)
    w.synced()


def until(what: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def served(answers: list[Answer], version: int, *, after: float = 0.0) -> list[Answer]:
    return [a for a in answers if a.served_by(version) and a.sent > after]


def test_a_good_candidate_goes_5_25_50_100_to_production_with_every_step_recorded(
    world: World,
) -> None:
    # At 5% a step needs a few seconds of traffic for its minimum sample.
    rid = world.start(plan(5, 25, 50, 100, interval="6s", min_requests=8))
    with world.traffic() as traffic:
        row = world.wait(rid, ENDED, timeout_s=120)
    assert row.phase == "succeeded", row.reason
    assert world.registry.stage_map(MODEL)["production"].number == CANDIDATE
    policy = world.registry.get_traffic(MODEL)
    assert policy is not None and policy.weights.get("canary", 0) == 0
    steps = [(e.kind, e.data.get("weight")) for e in world.events(rid)
             if e.kind != "rollout.error"]
    assert steps == [("rollout.started", None), ("rollout.verifying", 0),
                     ("rollout.progressing", 5), ("rollout.step", 25), ("rollout.step", 50),
                     ("rollout.step", 100), ("rollout.succeeded", 0)]
    assert "probes match" in world.events(rid)[2].message
    answers = traffic.snapshot()
    assert served(answers, CANDIDATE) and all(a.status == 200 for a in answers)
    # Which launch of the engine the probes were asked of (a controller run apart reads it).
    status = httpx.get(world.stack.url + "/admin/status", timeout=30,
                       headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert [e["generation"] for e in status["engines"].values()] == [
        e.generation for e in world.stack.gateway.state.engines.values()]
    assert all(e.generation >= 1 for e in world.stack.gateway.state.engines.values())


def test_twenty_percent_injected_errors_roll_back_and_the_candidate_serves_no_one_after(
    world: World,
) -> None:
    world.fault(CANDIDATE, error_rate=0.2)
    rid = world.start(plan(25, 100, interval="30s", min_requests=20))
    with world.traffic() as traffic:
        row = world.wait(rid, ENDED)
        time.sleep(1.0)  # users keep asking after the verdict
    assert row.phase == "rolled_back", row.reason
    assert "error_rate Failed" in row.reason
    assert row.ended_at is not None
    verdict = row.ended_at.timestamp()
    answers = traffic.snapshot()
    assert served(answers, CANDIDATE, after=verdict) == []
    assert [a for a in answers if a.sent > verdict + 0.2], "traffic went on after the verdict"
    first_bad = min(a.done for a in answers if a.served_by(CANDIDATE) and a.status == 500)
    exposed = [a for a in answers if a.served_by(CANDIDATE) and first_bad <= a.sent <= verdict]
    print(f"\nfirst bad response -> 0% canary weight: {verdict - first_bad:.2f} s, "
          f"{len(exposed)} requests served by v{CANDIDATE} in between "
          f"({sum(a.status == 500 for a in exposed)} of them failed)")
    assert verdict - first_bad < 20
    policy = world.registry.get_traffic(MODEL)
    assert policy is not None and policy.weights.get("canary", 0) == 0


def test_added_latency_rolls_back_on_the_latency_check(world: World) -> None:
    world.fault(CANDIDATE, latency_ms=200)
    rid = world.start(plan(25, 100, interval="30s", min_requests=15))
    with world.traffic():
        row = world.wait(rid, ENDED)
    assert row.phase == "rolled_back", row.reason
    failed = [a["name"] for a in row.analysis if a["verdict"] == "Failed"]
    assert failed == ["latency_p95"], row.analysis


def test_a_probe_mismatch_never_gets_traffic(world: World, tampered_version: int) -> None:
    rid = world.start(plan(25, 100), version=tampered_version)
    with world.traffic() as traffic:
        row = world.wait(rid, ENDED)
    assert row.phase == "rolled_back"
    # Both answers are in the verdict: what the artifact recorded, what the engine said.
    assert "does not serve the candidate's weights" in row.reason
    assert "the artifact recorded 'charlie" in row.reason
    assert "the engine answered 'bravo" in row.reason
    assert served(traffic.snapshot(), tampered_version) == []
    assert max(e.data.get("weight") or 0 for e in world.events(rid)) == 0


def test_a_restarted_controller_resumes_at_the_same_step(
    world: World, stack: Server, reg_home: Path,
) -> None:
    rid = world.start(plan(25, 50, 100, interval="2s"))
    gw = stack.gateway
    first = gw.rollouts
    assert first is not None
    reg = open_registry(reg_home)  # the restarted process's registry: nothing kept in memory
    try:
        with world.traffic():
            world.wait(rid, {"progressing"})
            until(lambda: world.registry.get_rollout(rid).weight >= 50)
            first.stop()  # `reg serve` goes away mid-rollout
            at = world.registry.get_rollout(rid)
            time.sleep(2.5)  # longer than an interval without a controller: nothing moves
            assert world.registry.get_rollout(rid).revision == at.revision
            gw.rollouts = RolloutHost.for_gateway(reg, gw.state, gw.records, gw.source,
                                                  gw.config)
            gw.rollouts.start()
            row = world.wait(rid, ENDED)
    finally:
        if gw.rollouts is not first:
            assert gw.rollouts is not None
            gw.rollouts.stop()
        # The session's stack goes on with a controller over its own registry again.
        gw.rollouts = RolloutHost.for_gateway(first.registry, gw.state, gw.records,
                                              gw.source, gw.config)
        gw.rollouts.start()
        reg.close()
    assert (at.phase, at.step, at.weight) == ("progressing", 1, 50)
    assert row.phase == "succeeded", row.reason
    weights = [e.data["weight"] for e in world.events(rid)
               if e.kind in ("rollout.progressing", "rollout.step")]
    assert weights == [25, 50, 100]  # resumed at 50%, not started over


def test_abort_and_promote_by_hand(world: World) -> None:
    rid = world.start(plan(25, 100, interval="60s"))
    with world.traffic() as traffic:
        world.wait(rid, {"progressing"})
        aborted = world.commands.command(MODEL, Command.abort, actor="alice",
                                         reason="game day")
        world.synced()
        after = time.time()
        time.sleep(1.0)
    assert aborted.phase == "aborted" and "game day" in aborted.reason
    assert served(traffic.snapshot(), CANDIDATE, after=after) == []
    event = world.events(rid)[-1]
    assert (event.kind, event.actor) == ("rollout.aborted", "alice")

    rid = world.start(plan(25, 100, interval="60s"))
    with world.traffic() as traffic:
        world.wait(rid, {"progressing"})
        promoted = world.commands.command(MODEL, Command.promote, actor="alice")
        world.synced()
        after = time.time()
        time.sleep(1.0)
    assert promoted.phase == "succeeded"
    assert world.registry.stage_map(MODEL)["production"].number == CANDIDATE
    late = [a for a in traffic.snapshot() if a.sent > after]
    assert late and all(a.served_by(CANDIDATE) and a.status == 200 for a in late)


def test_approval_waits_for_a_person_before_the_last_step(world: World) -> None:
    rid = world.start(plan(50, 100, interval="2s", approval=True))
    with world.traffic():
        row = world.wait(rid, {"awaiting_approval"} | ENDED)
        assert (row.phase, row.weight) == ("awaiting_approval", 50)
        time.sleep(3.0)  # longer than an interval: it waits for a person, not for time
        assert world.registry.get_rollout(rid).phase == "awaiting_approval"
        world.commands.command(MODEL, Command.resume, actor="alice", reason="looks good")
        row = world.wait(rid, ENDED)
    assert row.phase == "succeeded", row.reason
    assert [(e.kind, e.data.get("weight")) for e in world.events(rid)][-3:] == [
        ("rollout.awaiting_approval", 50), ("rollout.progressing", 100),
        ("rollout.succeeded", 0)]
