"""The canary controller: versions -> traffic, one straight, repeatable pass at a time.

Each pass, for every active rollout in the registry:

1. read its stored state and plan (nothing is held in memory between passes, so a
   restarted ``reg serve`` resumes at the same step);
2. gather what the decision needs: nothing (``pending``), the engine's probe answers
   (``verifying``), or, in serving phases, the probe answers again (the identity check
   answers from its cache until an engine restart) and the analysis window since the
   step began;
3. decide (:mod:`rollout.canary.decide`, pure);
4. write the decision and its effect in one registry transaction, compare-and-set on
   the revision it was read at (a stale write is dropped; the next pass reads again).

Errors become events and the next pass retries; a stage change the registry refuses
(adapter slots, a version its engine cannot serve) aborts the rollout with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from recipes.core.errors import RegError
from recipes.core.names import CANARY, PRODUCTION
from recipes.schema import RolloutSpec
from registry.api import Registry, RolloutChange
from registry.errors import Refused
from registry.rollouts import RolloutPublic, StaleRollout
from rollout.canary.analysis import CheckResult, StepVerdict, analyze, step_verdict
from rollout.canary.decide import (
    Command,
    Decision,
    Effect,
    RolloutState,
    decide,
    decide_command,
    decide_verification,
)
from rollout.canary.phases import SERVING, TERMINAL, Phase, TransitionRefused
from rollout.canary.records import MetricSource

Clock = Callable[[], datetime]
ACTOR = "rollout-controller"
# The registry lease whose holder runs the passes: one controller at a time, wherever it
# runs (inside `reg serve`, or `reg rollout run`).
LEASE_NAME = "canary"
_COMMAND_ATTEMPTS = 3


class IdentityCheck(Protocol):
    """Does the engine serve the candidate's weights? (probe prompts, pinned to the version)."""

    def verify(self, model: str, version: int) -> tuple[bool, str]: ...


@dataclass(frozen=True)
class PassOutcome:
    """What one pass did to one rollout."""

    model: str
    rollout: int
    phase: Phase
    reason: str
    results: tuple[CheckResult, ...] = ()


def state_of(row: RolloutPublic) -> RolloutState:
    return RolloutState(Phase(row.phase), row.step, row.weight, row.failures,
                        row.step_started_at)


def _effect_change(row: RolloutPublic, d: Decision) -> dict[str, Any]:
    """The stage pointers and canary weight that make ``d.effect`` true."""
    if d.effect is Effect.point_canary:
        return {"canary_weight": 0, "stages": [(CANARY, row.candidate)]}
    if d.effect is Effect.set_weight:
        return {"canary_weight": d.state.weight}
    if d.effect is Effect.promote:
        return {"canary_weight": 0,
                "stages": [(PRODUCTION, row.candidate), (CANARY, row.previous_canary)]}
    if d.effect is Effect.roll_back:
        return {"canary_weight": 0, "stages": [(CANARY, row.previous_canary)]}
    return {}


def _event_kind(before: Phase, d: Decision) -> str:
    if d.state.failures > 0 and d.effect is Effect.new_window:
        return "rollout.analysis_failed"
    if d.state.phase is before:
        return "rollout.step"
    return f"rollout.{d.state.phase.value}"


class RolloutCommands:
    """Starting a rollout (superseding another) and a person's commands: what needs no
    metrics and no engine, so `reg rollout pause` and the reconciler use it as it is."""

    def __init__(self, registry: Registry, *, clock: Clock | None = None) -> None:
        self.registry = registry
        self.clock = clock or (lambda: datetime.now(UTC))

    def start(self, model: str, version: int, spec: RolloutSpec, *, origin: str = "manual",
              actor: str | None = None, reason: str = "") -> RolloutPublic:
        """Start a rollout of ``version``; an active one of another version is superseded.

        The start is checked first, so a start that would be refused aborts nothing.
        """
        for active in self.registry.list_rollouts(model, active=True):
            if active.candidate == version:
                return active
            self.registry.check_rollout_start(model, version)
            self.command(model, Command.abort, actor=actor or ACTOR,
                         reason=f"superseded by v{version}")
        return self.registry.start_rollout(model, version, spec.model_dump(mode="json"),
                                           origin=origin, actor=actor or ACTOR, reason=reason)

    def command(self, model: str, command: Command, *, actor: str,
                reason: str = "") -> RolloutPublic:
        """A person's pause / resume / promote / abort of the model's active rollout.

        A controller pass that moves the rollout in between is not the person's mistake:
        the command is decided again on what it wrote (a few times, then the refusal).
        """
        attempt = 0
        while True:
            attempt += 1
            active = self.registry.list_rollouts(model, active=True)
            if not active:
                raise RegError(f"{model} has no active rollout",
                               hint="`reg rollout history` lists past ones; `reg rollout "
                               "start` begins one")
            row = active[0]
            spec = RolloutSpec.model_validate(row.plan)
            try:
                d = decide_command(state_of(row), spec, command, self.clock())
            except TransitionRefused as e:
                raise Refused(f"cannot {command.value} the rollout of {model} v{row.candidate}: "
                              f"{e}", hint=f"`reg rollout status {model}` shows where it "
                              "is") from None
            why = d.reason + (f": {reason}" if reason else "")
            try:
                return self._write(row, d, actor=actor, reason=why,
                                   data={"command": command.value})
            except StaleRollout:
                if attempt >= _COMMAND_ATTEMPTS:
                    raise

    def _write(self, row: RolloutPublic, d: Decision, *, actor: str, reason: str,
               results: Sequence[CheckResult] = (),
               data: Mapping[str, Any] | None = None) -> RolloutPublic:
        change = RolloutChange(
            expected_revision=row.revision, phase=d.state.phase.value,
            active=d.state.phase not in TERMINAL, step=d.state.step, weight=d.state.weight,
            failures=d.state.failures, step_started_at=d.state.step_started_at,
            reason=reason, event=_event_kind(Phase(row.phase), d),
            analysis=[_as_json(r) for r in results] if results else None,
            data=dict(data or {}), actor=actor, **_effect_change(row, d))
        return self.registry.advance_rollout(row.id, change)


class CanaryController(RolloutCommands):
    """Runs passes over every active rollout; hosted by ``reg serve`` or run alone.

    ``drain(model, version)``, when given, is told just before a decision that takes the
    candidate's traffic away is committed: a gateway in the same process stops routing to
    it at once, rather than when it next reads the registry, so no request is routed to a
    rolled-back version after its verdict.
    """

    def __init__(self, registry: Registry, source: MetricSource, identity: IdentityCheck,
                 *, clock: Clock | None = None,
                 drain: Callable[[str, int], None] | None = None) -> None:
        super().__init__(registry, clock=clock)
        self.source = source
        self.identity = identity
        self.drain = drain
        self._last_error: dict[int, str] = {}

    def _write(self, row: RolloutPublic, d: Decision, *, actor: str, reason: str,
               results: Sequence[CheckResult] = (),
               data: Mapping[str, Any] | None = None) -> RolloutPublic:
        if d.effect is Effect.roll_back and self.drain is not None:
            self.drain(row.model, row.candidate)
        return super()._write(row, d, actor=actor, reason=reason, results=results, data=data)

    # -- one pass ----------------------------------------------------------------------------

    def run_once(self) -> list[PassOutcome]:
        """One pass over every active rollout; each is independent of the others."""
        out: list[PassOutcome] = []
        for row in self.registry.list_rollouts(active=True):
            try:
                out.append(self._advance(row))
            except StaleRollout:
                continue  # moved by someone else since it was read: the next pass rereads
            except Refused as e:  # the registry refused the effect: retrying cannot help
                out.append(self._abort_on_error(row, e))
            except RegError as e:  # e.g. the engine is unreachable: record it, retry
                self._record_error(row, e)
                out.append(PassOutcome(row.model, row.id, Phase(row.phase), f"error: {e}"))
        return out

    def _record_error(self, row: RolloutPublic, error: RegError) -> None:
        text = str(error)
        if self._last_error.get(row.id) == text:
            return  # one event per distinct error, not one per pass
        self._last_error[row.id] = text
        self.registry.record_event("rollout.error", actor=ACTOR, model=row.model,
                                   version=row.candidate, message=text,
                                   data={"rollout": row.id, "phase": row.phase})

    def _advance(self, row: RolloutPublic) -> PassOutcome:
        spec = RolloutSpec.model_validate(row.plan)
        state, now = state_of(row), self.clock()
        results: tuple[CheckResult, ...] = ()
        if state.phase is Phase.pending:
            d = decide(state, spec, StepVerdict.waiting, now)
        else:
            # Verifying: may the first step begin? Serving: does the engine still serve the
            # candidate's weights (the check answers from its cache until an engine restart)?
            matched, detail = self.identity.verify(row.model, row.candidate)
            # Asking the engine may take seconds with no canary traffic: the window the
            # first step opens, and the analysis below, start from the time after it.
            now = self.clock()
            d = decide_verification(state, spec, matched, detail, now)
        if state.phase in SERVING and d.effect is None:
            assert row.baseline is not None
            # At 100% the baseline serves nothing beside the canary: compare with what it
            # served during the whole rollout instead.
            baseline_since = row.started_at if state.weight >= 100 else None
            window = self.source.window(row.model, row.candidate, row.baseline,
                                        state.step_started_at, now, baseline_since)
            results = tuple(analyze(window, spec))
            verdict = step_verdict(results, window.seconds, spec)
            # A next step's window opens when its weight is written: after the analysis
            # (the first one imports scipy, which takes seconds on a busy machine).
            d = decide(state, spec, verdict, self.clock())
        if d.effect is None and d.state == state:
            if results:
                self.registry.note_rollout_analysis(row.id, [_as_json(r) for r in results])
            return PassOutcome(row.model, row.id, state.phase, d.reason, results)
        why = d.reason + ("" if not results else ": " + "; ".join(
            r.describe() for r in results))
        self._write(row, d, actor=ACTOR, reason=why, results=results)
        return PassOutcome(row.model, row.id, d.state.phase, why, results)

    def _abort_on_error(self, row: RolloutPublic, error: RegError) -> PassOutcome:
        spec = RolloutSpec.model_validate(row.plan)
        state = state_of(row)
        d = decide_command(state, spec, Command.abort, self.clock())
        why = f"aborted: {error}" + (f" ({error.hint})" if error.hint else "")
        with contextlib.suppress(StaleRollout):
            self._write(row, d, actor=ACTOR, reason=why)
        return PassOutcome(row.model, row.id, Phase.aborted, why)


def _as_json(result: CheckResult) -> dict[str, Any]:
    out = asdict(result)
    out["verdict"] = result.verdict.value
    return out
