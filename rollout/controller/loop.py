"""The loop every controller runs: a pass every interval until stopped, errors retried.

:func:`watch` repeats ``run_pass`` (which takes the controller's lease itself):

1. a pass that returns is reported (``on_pass(report, None)``); the next one
   starts ``interval_s`` later;
2. :class:`~registry.errors.LeaseHeld` means another replica is working:
   this one stands by (reported, not recorded) and tries again after the interval;
3. any other error is reported, recorded (``record_error``: an event, for
   controllers) and retried next pass, after a delay that doubles with each
   consecutive failed pass up to ``max_backoff_s`` (:func:`next_delay`), so a
   registry that is down is not hammered; one good pass resets it.

``reg reconcile --once`` is a single pass without this loop: its errors go to
the CLI's error table.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from registry.errors import LeaseHeld

log = logging.getLogger("reg.controller")

R = TypeVar("R")

DEFAULT_MAX_BACKOFF_S = 600.0


def next_delay(interval_s: float, failed_passes: int,
               max_backoff_s: float = DEFAULT_MAX_BACKOFF_S) -> float:
    """Seconds before the next pass: the interval, doubled per consecutive failed pass, capped.

    The cap never shortens the interval itself.
    """
    if failed_passes <= 0:
        return interval_s
    doubled = interval_s * 2.0 ** min(failed_passes, 60)
    return max(interval_s, min(doubled, max_backoff_s))


def watch(
    run_pass: Callable[[], R],
    stop: threading.Event,
    *,
    interval_s: float,
    on_pass: Callable[[R | None, BaseException | None], None] | None = None,
    record_error: Callable[[BaseException], None] | None = None,
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
    wait: Callable[[float], object] | None = None,
) -> None:
    """Run ``run_pass`` every ``interval_s`` seconds until ``stop`` is set.

    ``wait(seconds)`` sleeps between passes; by default ``stop.wait``, so a stop
    wakes it at once.
    """
    wait = wait or stop.wait
    failed = 0
    while not stop.is_set():
        try:
            report = run_pass()
        except LeaseHeld as e:
            failed = 0
            if on_pass:
                on_pass(None, e)
        except Exception as e:
            failed += 1
            log.warning("pass failed (%d in a row): %s", failed, e)
            if record_error is not None:
                # The registry may be what failed: recording is best effort.
                with contextlib.suppress(Exception):
                    record_error(e)
            if on_pass:
                on_pass(None, e)
        else:
            failed = 0
            if on_pass:
                on_pass(report, None)
        wait(next_delay(interval_s, failed, max_backoff_s))
