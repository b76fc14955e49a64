"""Holding a controller's lease for one pass: acquire or wait, reclaim, heartbeat, release.

:func:`hold_lease` wraps :class:`registry.lease.Leases` for a pass:

1. acquire the named lease; while another holder has it, reclaim it at once
   if that holder is a local process that has exited, else wait (up to
   ``wait_s``) for it to be released or to expire, then raise
   :class:`~registry.errors.LeaseHeld` saying who holds it;
2. a heartbeat thread renews it every ``ttl_s / 3`` while the pass runs (a
   training run can take hours); :attr:`Heartbeat.lost` turns True if
   another holder took it over, and the controller stops acting then;
3. release it when the pass ends, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from registry.errors import LeaseHeld

if TYPE_CHECKING:
    from registry.lease import Leases
    from registry.tables import LeasePublic

log = logging.getLogger("reg.controller")

DEFAULT_TTL_S = 60.0


class Heartbeat:
    """Renews the lease every ttl/3 seconds on a daemon thread until the block ends."""

    def __init__(self, renew: Callable[[], bool], ttl_s: float, what: str) -> None:
        self._renew = renew
        self._period = max(ttl_s / 3, 0.05)
        self._what = what
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._loop, name=f"reg-lease-{what}",
                                        daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._period):
            try:
                if not self._renew():
                    self.lost = True
                    log.warning("the %s lease was taken over by another holder", self._what)
                    return
            except Exception:  # a transient database error: try again next period
                log.exception("%s lease heartbeat failed", self._what)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _held_by(held: LeasePublic | None) -> str:
    if held is None:
        return "another process"
    return (f"{held.holder} since {held.acquired_at.isoformat(timespec='seconds')} "
            f"(last heartbeat {held.heartbeat_at.isoformat(timespec='seconds')}, "
            f"expires {held.expires_at.isoformat(timespec='seconds')})")


@contextlib.contextmanager
def hold_lease(leases: Leases, name: str, holder: str, *, ttl_s: float = DEFAULT_TTL_S,
               wait_s: float = 0.0, poll_s: float = 1.0) -> Iterator[Heartbeat]:
    """Hold lease ``name`` as ``holder`` for the block, waiting up to ``wait_s`` for it."""
    deadline = time.monotonic() + wait_s
    while leases.acquire(name, holder, ttl_s) is None:
        gone = leases.reclaim(name)
        if gone is not None:
            log.warning("reclaimed the %s lease of %s, which has exited", name, gone.holder)
            continue
        if time.monotonic() >= deadline:
            raise LeaseHeld(
                f"another {name} holds the lease: {_held_by(leases.get(name))}",
                hint="wait for it to finish (`--wait-lease SECONDS`), or, if that process "
                "is gone, the lease expires by itself",
            )
        time.sleep(poll_s)
    try:
        with Heartbeat(lambda: leases.renew(name, holder, ttl_s), ttl_s, name) as hb:
            yield hb
    finally:
        with contextlib.suppress(Exception):
            leases.release(name, holder)
