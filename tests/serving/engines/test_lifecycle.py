"""serving.engines.lifecycle: the supervisor's decisions (pure)."""

from __future__ import annotations

import pytest

from serving.engines.lifecycle import backoff_delay, next_state, plan_engines
from serving.engines.process import EngineSpec, EngineState


def test_plan_engines_starts_restarts_and_stops() -> None:
    def spec(base: str, rank: int = 8, port: int = 0, model_len: int = 512) -> EngineSpec:
        return EngineSpec(base, "x", 4, rank, model_len, port=port)

    plan = plan_engines(
        {"a": spec("a"), "b": spec("b", rank=16), "c": spec("c"), "e": spec("e", model_len=1024)},
        {"b": spec("b", rank=8, port=1234), "d": spec("d"), "c": spec("c", port=99),
         "e": spec("e")},
    )
    assert (plan.start, plan.restart, plan.stop) == (("a",), ("b", "e"), ("d",))


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(a, 1.0, 10.0) for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize(
    ("state", "kwargs", "expected"),
    [
        pytest.param(EngineState.starting, {"healthy": True}, EngineState.ready, id="comes-up"),
        pytest.param(EngineState.starting, {"healthy": False}, EngineState.starting,
                     id="still-starting"),
        pytest.param(EngineState.starting, {"healthy": False, "started_for": 999},
                     EngineState.down, id="start-timeout"),
        pytest.param(EngineState.ready, {"exited": True}, EngineState.down, id="died"),
        pytest.param(EngineState.ready, {"healthy": False, "health_failures": 1},
                     EngineState.ready, id="one-failed-check"),
        pytest.param(EngineState.ready, {"healthy": False, "health_failures": 3},
                     EngineState.down, id="three-failed-checks"),
        pytest.param(EngineState.down, {"healthy": True}, EngineState.down,
                     id="down-waits-for-restart"),
        pytest.param(EngineState.stopped, {"exited": True}, EngineState.stopped, id="stopped"),
    ],
)
def test_next_state(state: EngineState, kwargs: dict[str, object], expected: EngineState
                    ) -> None:
    args: dict[str, object] = {"exited": False, "healthy": None, "health_failures": 0,
                               "started_for": 1.0, "start_timeout": 180.0, **kwargs}
    assert next_state(state, **args) is expected  # type: ignore[arg-type]
