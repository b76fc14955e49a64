"""rollout.canary.decide: the controller's decisions, stepped one pass at a time (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recipes.schema import RolloutSpec
from rollout.canary.analysis import StepVerdict
from rollout.canary.decide import (
    Command,
    Decision,
    Effect,
    RolloutState,
    decide,
    decide_command,
    decide_verification,
)
from rollout.canary.phases import TERMINAL, TRANSITIONS, Phase, TransitionRefused

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def plan(**overrides: Any) -> RolloutSpec:
    steps = [{"weight": w} for w in (5, 25, 50, 100)]
    return RolloutSpec.model_validate({"steps": steps, **overrides})


def fresh() -> RolloutState:
    return RolloutState(Phase.pending, step=-1, weight=0, failures=0, step_started_at=T0)


def verified(spec: RolloutSpec) -> RolloutState:
    d = decide(fresh(), spec, StepVerdict.waiting, T0)
    assert (d.state.phase, d.effect) == (Phase.verifying, Effect.point_canary)
    d = decide_verification(d.state, spec, True, "", T0)
    assert (d.state.phase, d.state.weight, d.effect) == (Phase.progressing, 5, Effect.set_weight)
    return d.state


def test_a_good_candidate_goes_5_25_50_100_then_production() -> None:
    spec = plan()
    state = verified(spec)
    weights: list[int] = [state.weight]
    effects: list[Effect | None] = []
    for i in range(4):
        d = decide(state, spec, StepVerdict.passed, T0 + timedelta(seconds=i + 1))
        state, effects = d.state, [*effects, d.effect]
        weights.append(state.weight)
    assert weights == [5, 25, 50, 100, 0]
    assert effects == [Effect.set_weight] * 3 + [Effect.promote]
    assert state.phase is Phase.succeeded


def test_waiting_changes_nothing() -> None:
    spec = plan()
    state = verified(spec)
    d = decide(state, spec, StepVerdict.waiting, T0 + timedelta(seconds=3))
    assert d == Decision(state, None, "")


def test_a_failed_analysis_rolls_back_at_the_failure_limit() -> None:
    spec = plan(failure_limit=2)
    state = verified(spec)
    d = decide(state, spec, StepVerdict.failed, T0 + timedelta(seconds=1))
    assert (d.state.phase, d.state.failures, d.effect) == (Phase.progressing, 1,
                                                           Effect.new_window)
    assert d.state.step_started_at == T0 + timedelta(seconds=1)
    d = decide(d.state, spec, StepVerdict.failed, T0 + timedelta(seconds=2))
    assert (d.state.phase, d.state.weight, d.effect) == (Phase.rolled_back, 0, Effect.roll_back)
    assert "2/2" in d.reason


@pytest.mark.parametrize(("on_inconclusive", "phase", "effect"), [
    pytest.param("pause", Phase.paused, None, id="pause"),
    pytest.param("rollback", Phase.rolled_back, Effect.roll_back, id="rollback"),
])
def test_inconclusive_at_the_deadline(on_inconclusive: str, phase: Phase,
                                      effect: Effect | None) -> None:
    spec = plan(on_inconclusive=on_inconclusive)
    d = decide(verified(spec), spec, StepVerdict.inconclusive, T0 + timedelta(seconds=11))
    assert (d.state.phase, d.effect) == (phase, effect)


def test_a_paused_rollout_still_rolls_back_on_failure() -> None:
    spec = plan()
    paused = decide_command(verified(spec), spec, Command.pause, T0).state
    assert decide(paused, spec, StepVerdict.passed, T0).state == paused
    assert decide(paused, spec, StepVerdict.failed, T0).state.phase is Phase.rolled_back


def test_approval_waits_before_the_last_step() -> None:
    spec = plan(approval=True)
    state = verified(spec)
    for _ in range(2):
        state = decide(state, spec, StepVerdict.passed, T0).state
    assert state.weight == 50
    waiting = decide(state, spec, StepVerdict.passed, T0)
    assert (waiting.state.phase, waiting.state.weight, waiting.effect) == (
        Phase.awaiting_approval, 50, None)
    assert decide(waiting.state, spec, StepVerdict.passed, T0).state == waiting.state
    approved = decide_command(waiting.state, spec, Command.resume, T0)
    assert (approved.state.phase, approved.state.weight) == (Phase.progressing, 100)
    done = decide(approved.state, spec, StepVerdict.passed, T0)
    assert done.state.phase is Phase.succeeded


@pytest.mark.parametrize(("command", "phase", "effect"), [
    pytest.param(Command.abort, Phase.aborted, Effect.roll_back, id="abort"),
    pytest.param(Command.promote, Phase.succeeded, Effect.promote, id="promote"),
    pytest.param(Command.pause, Phase.paused, None, id="pause"),
])
def test_commands(command: Command, phase: Phase, effect: Effect | None) -> None:
    spec = plan()
    d = decide_command(verified(spec), spec, command, T0)
    assert (d.state.phase, d.effect) == (phase, effect)


def test_a_probe_mismatch_never_gets_traffic() -> None:
    spec = plan()
    verifying = decide(fresh(), spec, StepVerdict.passed, T0).state
    d = decide_verification(verifying, spec, False, "answer 'x' != 'y'", T0)
    assert (d.state.phase, d.state.weight, d.effect) == (Phase.rolled_back, 0, Effect.roll_back)
    assert "answer 'x' != 'y'" in d.reason


@pytest.mark.parametrize("phase", [
    pytest.param(Phase.progressing, id="progressing"),
    pytest.param(Phase.paused, id="paused"),
    pytest.param(Phase.awaiting_approval, id="awaiting-approval"),
])
def test_the_identity_check_again_while_serving_rolls_back_on_a_mismatch(phase: Phase) -> None:
    spec = plan()
    serving = replace(verified(spec), phase=phase)
    assert decide_verification(serving, spec, True, "3/3 equal", T0) == Decision(
        serving, None, "")
    d = decide_verification(serving, spec, False, "probe 1: 'alpha' != 'bravo'", T0)
    assert (d.state.phase, d.state.weight, d.effect) == (Phase.rolled_back, 0, Effect.roll_back)
    assert "no longer serves the candidate's weights: probe 1: 'alpha' != 'bravo'" in d.reason


@pytest.mark.parametrize(("phase", "command", "message"), [
    pytest.param(Phase.succeeded, Command.abort, "has ended", id="ended"),
    pytest.param(Phase.verifying, Command.promote, "identity check comes first",
                 id="promote-before-verified"),
    pytest.param(Phase.progressing, Command.resume, "only a paused rollout resumes",
                 id="resume-running"),
])
def test_refused_commands(phase: Phase, command: Command, message: str) -> None:
    state = RolloutState(phase, 0, 5, 0, T0)
    with pytest.raises(TransitionRefused, match=message):
        decide_command(state, plan(), command, T0)


def test_every_phase_has_a_row_and_terminal_ones_lead_nowhere() -> None:
    assert set(TRANSITIONS) == set(Phase)
    assert all(not TRANSITIONS[p] for p in TERMINAL)


@given(st.lists(st.one_of(st.sampled_from(list(StepVerdict)), st.sampled_from(list(Command)),
                          st.booleans()), max_size=30))
def test_any_sequence_keeps_to_the_table_and_the_plan(events: list[object]) -> None:
    spec = plan(approval=True, failure_limit=2)
    state = fresh()
    for event in events:
        before = state
        try:
            if isinstance(event, StepVerdict):
                state = decide(state, spec, event, T0).state
            elif isinstance(event, Command):
                state = decide_command(state, spec, event, T0).state
            else:
                state = decide_verification(state, spec, bool(event), "", T0).state
        except TransitionRefused:
            continue
        assert state.phase is before.phase or state.phase in TRANSITIONS[before.phase]
        assert state.weight in (0, 5, 25, 50, 100)
        if state.phase in TERMINAL:
            assert state.weight == 0
