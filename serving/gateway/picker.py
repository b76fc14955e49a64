"""Choose the engine replica for a request once its version is chosen. Pure; no I/O.

The version comes first (the traffic policy, :func:`serving.gateway.routing.resolve`);
then, among the ready replicas of that version's base model, :func:`pick` orders the
ones to try, the way the Gateway API Inference Extension's endpoint picker filters by
LoRA affinity and queue:

1. only ready replicas that hold the adapter (``loaded``), or have a free adapter slot
   (``free slot``: it can take the adapter with one load) are candidates; the others
   would answer 404 for it;
2. a replica whose scraped load is stale (older than ``stale_after_s``) goes after every
   fresh one: its engine stopped answering ``/metrics``;
3. among fresh ones, those not over the queue (``waiting < spill_waiting``) come first,
   holders of the adapter before free slots, so an adapter stays where it is loaded until
   its replicas queue, and only then spills onto one more replica;
4. within a tier, the least loaded first: waiting, then running, then the gateway's own
   requests in flight to it (known at once, where the scrape lags), then the key (so the
   order is total and repeatable).

Requests for the base model itself (``adapter`` None) treat every ready replica as a
holder. The result is the order to try: the first, then (on a failure before any byte)
the next, and after the last, production.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from serving.engines.load import EngineLoad

# A replica's queue from which an adapter spills onto a replica that does not hold it.
SPILL_WAITING = 4.0
STALE_AFTER_S = 2.0


class Fit(IntEnum):
    """How a replica can serve an adapter (lower sorts first)."""

    loaded = 0  # the adapter is loaded there
    free_slot = 1  # not loaded, but a slot is free: one load away


@dataclass(frozen=True)
class ReplicaView:
    """What the picker knows of one replica."""

    key: str
    ready: bool
    adapters: frozenset[str]
    slots: int  # vLLM's --max-loras
    load: EngineLoad | None = None
    in_flight: int = 0


@dataclass(frozen=True)
class Pick:
    key: str
    fit: Fit
    stale: bool
    load: EngineLoad | None = field(default=None, compare=False)


def fit(replica: ReplicaView, adapter: str | None) -> Fit | None:
    """How ``replica`` can serve ``adapter``, or None if it cannot."""
    if not replica.ready:
        return None
    if adapter is None or adapter in replica.adapters:
        return Fit.loaded
    if len(replica.adapters) < replica.slots:
        return Fit.free_slot
    return None


def pick(adapter: str | None, replicas: Iterable[ReplicaView], now: float, *,
         stale_after_s: float = STALE_AFTER_S, spill_waiting: float = SPILL_WAITING,
         ) -> list[Pick]:
    """The replicas to try for ``adapter``, best first (empty: none can serve it)."""
    ranked: list[tuple[tuple[int, int, int, float, float, int, str], Pick]] = []
    for r in replicas:
        f = fit(r, adapter)
        if f is None:
            continue
        stale = r.load is None or r.load.stale(now, stale_after_s)
        waiting = 0.0 if stale or r.load is None else r.load.waiting
        running = 0.0 if stale or r.load is None else r.load.running
        queued = int(waiting >= spill_waiting)
        ranked.append(((int(stale), queued, int(f), waiting, running, r.in_flight, r.key),
                       Pick(key=r.key, fit=f, stale=stale, load=r.load)))
    ranked.sort(key=lambda x: x[0])
    return [p for _, p in ranked]
