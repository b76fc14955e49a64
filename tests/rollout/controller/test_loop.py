"""The controller loop: passes every interval, standby on a held lease, failed passes
recorded and retried after a growing delay."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from registry.errors import LeaseHeld
from rollout.controller.loop import next_delay, watch


@pytest.mark.parametrize(("failed", "cap", "delay"), [
    pytest.param(0, 600, 10, id="a-good-pass-waits-the-interval"),
    pytest.param(1, 600, 20, id="one-failure-doubles-it"),
    pytest.param(3, 600, 80, id="three-failures"),
    pytest.param(10, 600, 600, id="capped"),
    pytest.param(10_000, 600, 600, id="no-overflow"),
    pytest.param(1, 5, 10, id="the-cap-never-shortens-the-interval"),
])
def test_next_delay(failed: int, cap: float, delay: float) -> None:
    assert next_delay(10, failed, cap) == delay


Outcome = str | BaseException


def script(outcomes: list[Outcome], stop: threading.Event) -> Callable[[], str]:
    """A pass that returns or raises the next outcome, and stops the loop after the last."""
    queue = list(outcomes)

    def run_pass() -> str:
        item = queue.pop(0)
        if not queue:
            stop.set()
        if isinstance(item, BaseException):
            raise item
        return item

    return run_pass


def test_watch_stands_by_records_errors_and_backs_off_until_a_good_pass() -> None:
    stop = threading.Event()
    boom = RuntimeError("database is locked")
    passes = script(["p1", LeaseHeld("held by other:1"), boom, boom, "p2", boom], stop)
    seen: list[tuple[str | None, str | None]] = []
    recorded: list[str] = []
    waits: list[float] = []

    watch(passes, stop, interval_s=1.0, max_backoff_s=100,
          on_pass=lambda r, e: seen.append((r, None if e is None else str(e))),
          record_error=lambda e: recorded.append(str(e)), wait=waits.append)

    assert seen == [("p1", None), (None, "held by other:1"), (None, "database is locked"),
                    (None, "database is locked"), ("p2", None), (None, "database is locked")]
    assert recorded == ["database is locked"] * 3  # standby is not an error
    assert waits == [1.0, 1.0, 2.0, 4.0, 1.0, 2.0]


def test_a_failure_to_record_an_error_does_not_stop_the_loop() -> None:
    stop = threading.Event()

    def broken_recorder(e: BaseException) -> None:
        raise OSError("the registry is down too")

    seen: list[str | None] = []
    watch(script([RuntimeError("down"), "back"], stop), stop, interval_s=0.0,
          on_pass=lambda r, e: seen.append(r), record_error=broken_recorder,
          wait=lambda s: None)
    assert seen == [None, "back"]


def test_a_stop_ends_the_loop_during_its_wait() -> None:
    stop = threading.Event()
    passes: list[int] = []

    def run_pass() -> int:
        passes.append(1)
        threading.Timer(0.1, stop.set).start()
        return len(passes)

    worker = threading.Thread(target=watch, args=(run_pass, stop), kwargs={"interval_s": 600})
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive() and passes == [1]
