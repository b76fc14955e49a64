"""The supervisor's decisions, pure: which engines to start, restart and stop, and where
one engine goes next in its life. :mod:`serving.engines.supervisor` carries them out.

An engine's states (:class:`~serving.engines.process.EngineState`) and their moves::

    starting --/health answers--> ready --exits, or fails health checks--> down
    starting --exits, or no /health within the start timeout--> down
    down --(the supervisor, after backoff_delay)--> starting
    any --(shutdown, or no deployment needs it)--> stopped

An adapter that fails to fetch or load (:class:`SyncFailure`) is retried after the same
kind of backoff, so a corrupt artifact costs one attempt per backoff step, not one per
pass; meanwhile its version is degraded (the gateway answers its requests without it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from serving.engines.process import EngineSpec, EngineState

HEALTH_FAILURES_BEFORE_DOWN = 3


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before restart number ``attempt`` (1, 2, 4, ... capped)."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class SyncFailure:
    """An adapter that failed to fetch or load: why, how many times in a row, and when
    (on the supervisor's clock) the next attempt is due."""

    reason: str
    attempts: int
    retry_at: float


# tenacity's wait strategies (wait_exponential) price one retried *call*, from a
# RetryCallState that lives while the call loops; an adapter's next attempt is a later
# supervisor pass, with the attempt count kept between passes, and engine restarts already
# back off by backoff_delay: one formula for both.
def next_failure(
    previous: SyncFailure | None, reason: str, now: float, base: float, cap: float
) -> SyncFailure:
    """The failure after one more failed attempt at ``now``: the count goes on only while
    the reason stays the same (a new reason is a new failure, tried again soon)."""
    same = previous is not None and previous.reason == reason
    attempts = previous.attempts + 1 if same and previous is not None else 1
    return SyncFailure(reason, attempts, now + backoff_delay(attempts, base, cap))


@dataclass(frozen=True)
class EnginePlan:
    start: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()


def plan_engines(
    desired: Mapping[str, EngineSpec], running: Mapping[str, EngineSpec]
) -> EnginePlan:
    """Which engines to start, restart (their flags changed) and stop. Ports are not flags."""

    def flags(s: EngineSpec) -> EngineSpec:
        return replace(s, port=0)

    return EnginePlan(
        start=tuple(sorted(k for k in desired if k not in running)),
        restart=tuple(sorted(
            k for k in desired if k in running and flags(desired[k]) != flags(running[k])
        )),
        stop=tuple(sorted(k for k in running if k not in desired)),
    )


def next_state(
    state: EngineState, *, exited: bool, healthy: bool | None, health_failures: int,
    started_for: float, start_timeout: float,
) -> EngineState:
    """One engine's next state. ``healthy`` is None when no health check ran this pass."""
    if state is EngineState.stopped:
        return state
    if state is EngineState.down:
        return state  # the restart, after its backoff, is the supervisor's move
    if exited:
        return EngineState.down
    if state is EngineState.starting:
        if healthy:
            return EngineState.ready
        return EngineState.down if started_for > start_timeout else state
    if healthy is False and health_failures >= HEALTH_FAILURES_BEFORE_DOWN:
        return EngineState.down
    return state
