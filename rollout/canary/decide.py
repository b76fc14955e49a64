"""What the canary controller does next: pure functions of the stored state. No I/O.

``decide`` turns one pass's step verdict into the next state; ``decide_verification``
the engine's probe comparison; ``decide_command`` a person's pause, resume, promote or
abort. Each returns a :class:`Decision` whose phase change :data:`TRANSITIONS` allows
and whose ``effect`` says what the controller must make true in the world (in the same
transaction that stores the decision).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from recipes.schema import RolloutSpec
from rollout.canary.analysis import StepVerdict
from rollout.canary.phases import SERVING, TERMINAL, Phase, TransitionRefused, check_transition


@dataclass(frozen=True)
class RolloutState:
    """The stored part of a rollout the decisions need."""

    phase: Phase
    step: int  # index into the plan's steps; -1 before the first
    weight: int  # the canary's traffic percentage now
    failures: int  # failed analyses so far
    step_started_at: datetime  # when the current analysis window opened


class Effect(StrEnum):
    """What must change in the world with a decision."""

    point_canary = "point_canary"  # the canary stage -> the candidate, weight 0
    set_weight = "set_weight"  # the canary weight -> the decision's weight
    new_window = "new_window"  # the same weight, a fresh analysis window
    promote = "promote"  # production -> the candidate; canary weight 0, stage restored
    roll_back = "roll_back"  # canary weight 0, the canary stage back to its previous version


class Command(StrEnum):
    pause = "pause"
    resume = "resume"
    promote = "promote"
    abort = "abort"


@dataclass(frozen=True)
class Decision:
    state: RolloutState
    effect: Effect | None
    reason: str  # empty when nothing changed


def _to(state: RolloutState, phase: Phase, now: datetime, *, step: int | None = None,
        weight: int | None = None, failures: int | None = None,
        new_window: bool = False) -> RolloutState:
    check_transition(state.phase, phase)
    return replace(
        state, phase=phase, step=state.step if step is None else step,
        weight=state.weight if weight is None else weight,
        failures=state.failures if failures is None else failures,
        step_started_at=now if new_window else state.step_started_at,
    )


def _next_step(state: RolloutState, spec: RolloutSpec, now: datetime, why: str) -> Decision:
    weights = [s.weight for s in spec.steps]
    nxt = state.step + 1
    if nxt >= len(weights):
        return Decision(_to(state, Phase.succeeded, now, weight=0), Effect.promote,
                        f"{why}; all {len(weights)} steps passed: promoting to production")
    if spec.approval and nxt == len(weights) - 1 and state.phase is not Phase.awaiting_approval:
        return Decision(_to(state, Phase.awaiting_approval, now), None,
                        f"{why}; waiting for approval before the last step "
                        f"({weights[nxt]}%): `reg rollout promote` or `reg rollout resume`")
    return Decision(
        _to(state, Phase.progressing, now, step=nxt, weight=weights[nxt], new_window=True),
        Effect.set_weight, f"{why}; step {nxt + 1}/{len(weights)}: canary at {weights[nxt]}%")


def decide(state: RolloutState, spec: RolloutSpec, verdict: StepVerdict,
           now: datetime) -> Decision:
    """The next state after one analysis pass with ``verdict``."""
    if state.phase is Phase.pending:
        return Decision(_to(state, Phase.verifying, now, weight=0, new_window=True),
                        Effect.point_canary, "canary stage -> candidate at 0%; verifying")
    if state.phase not in SERVING:
        return Decision(state, None, "")
    if verdict is StepVerdict.failed:
        failures = state.failures + 1
        if failures >= spec.failure_limit:
            return Decision(_to(state, Phase.rolled_back, now, weight=0, failures=failures),
                            Effect.roll_back,
                            f"analysis failed ({failures}/{spec.failure_limit}): rolled back")
        return Decision(_to(state, state.phase, now, failures=failures, new_window=True),
                        Effect.new_window,
                        f"analysis failed ({failures}/{spec.failure_limit}): analysing again")
    if state.phase is not Phase.progressing or verdict is StepVerdict.waiting:
        return Decision(state, None, "")  # held (paused, awaiting approval) or not clear yet
    if verdict is StepVerdict.inconclusive:
        if spec.on_inconclusive == "rollback":
            return Decision(_to(state, Phase.rolled_back, now, weight=0), Effect.roll_back,
                            "step inconclusive at its deadline (on_inconclusive: rollback)")
        return Decision(_to(state, Phase.paused, now), None,
                        "step inconclusive at its deadline (on_inconclusive: pause): "
                        "`reg rollout resume` to analyse again, `promote` or `abort`")
    return _next_step(state, spec, now, "analysis passed")


def decide_verification(state: RolloutState, spec: RolloutSpec, matched: bool, detail: str,
                        now: datetime) -> Decision:
    """After the engine's probe answers were compared with the artifact's.

    In ``verifying`` a match lets the first step begin. While the candidate serves, the
    check is made again after every engine restart: a mismatch then rolls back too.
    """
    if state.phase in SERVING:
        if matched:
            return Decision(state, None, "")
        return Decision(_to(state, Phase.rolled_back, now, weight=0), Effect.roll_back,
                        f"the engine no longer serves the candidate's weights: {detail}")
    if state.phase is not Phase.verifying:
        return Decision(state, None, "")
    if not matched:
        return Decision(_to(state, Phase.rolled_back, now, weight=0), Effect.roll_back,
                        f"the engine does not serve the candidate's weights: {detail}")
    first = spec.steps[0].weight
    return Decision(
        _to(state, Phase.progressing, now, step=0, weight=first, new_window=True),
        Effect.set_weight, f"probes match; step 1/{len(spec.steps)}: canary at {first}%")


def decide_command(state: RolloutState, spec: RolloutSpec, command: Command,
                   now: datetime) -> Decision:
    """A person's command; raises :class:`TransitionRefused` when it cannot apply."""
    if state.phase in TERMINAL:
        raise TransitionRefused(f"the rollout has ended ({state.phase.value})")
    if command is Command.abort:
        return Decision(_to(state, Phase.aborted, now, weight=0), Effect.roll_back, "aborted")
    if command is Command.pause:
        if state.phase is Phase.paused:
            return Decision(state, None, "")
        if state.phase not in SERVING:
            raise TransitionRefused(f"cannot pause while {state.phase.value}")
        return Decision(_to(state, Phase.paused, now), None, "paused")
    if command is Command.resume:
        if state.phase is Phase.awaiting_approval:
            return _next_step(state, spec, now, "approved")
        if state.phase is not Phase.paused:
            raise TransitionRefused(f"only a paused rollout resumes (it is {state.phase.value})")
        return Decision(_to(state, Phase.progressing, now, new_window=True), Effect.new_window,
                        "resumed: analysing again")
    if state.phase not in SERVING:
        raise TransitionRefused(
            f"cannot promote while {state.phase.value}: the engine's identity check comes "
            "first")
    return Decision(_to(state, Phase.succeeded, now, weight=0), Effect.promote,
                    "promoted by hand: remaining steps skipped")
