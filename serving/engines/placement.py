"""Which replicas of a base model hold which adapters: as many as each adapter's traffic
needs. Pure, except :class:`DemandMeter`, whose clock is injected.

vLLM serves an adapter from a replica only once it is loaded there
(``/v1/load_lora_adapter``), and keeps ``--max-loras`` of them in its slots; an engine
asked for more adapters than it has slots swaps them in and out from disk, batch by
batch. So the supervisor loads each adapter on the replicas :func:`place` gives it,
and the gateway's picker (:mod:`serving.gateway.picker`) sends its requests there:

1. **Room for all** (a base with no more deployed adapters than one replica has slots):
   every replica holds every adapter. Nothing would be swapped, and any replica can
   take any request, which spreads the load best.
2. **Otherwise, by traffic.** An adapter gets ``ceil(N * share)`` of the ``N`` ready
   replicas, where ``share`` is its part of the base's recent requests, plus one when
   its holders queued (the picker spilled past them); at least one, at most ``N``. An
   adapter idle for the meter's window (no request) shrinks to one replica: it is
   unloaded from the others.
3. **Sticky, then spread.** Each adapter, the busiest first, goes to replicas with a
   free slot before full ones; among those, to replicas that already hold it (no load),
   then to the fewest adapters, then to the least traffic placed so far. Copies the
   traffic asks for are placed even over the slots (a replica then holds more adapters
   than slots, and vLLM swaps the ones that are not in a batch): one busy adapter on one
   replica while the other idles costs more than an idle adapter swapped now and then.

The supervisor loads before it unloads, and never unloads a replica's copy while it is
the only ready one (:func:`keep_last_holders`), so moving an adapter never leaves a
moment with no replica that serves it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from serving.engines.process import EngineState
from serving.engines.replicas import EngineSlot

# How long the meter averages over; an adapter without requests for this long is idle.
DEMAND_WINDOW_S = 60.0


@dataclass(frozen=True)
class Demand:
    """One adapter's recent traffic on one base."""

    rate: float = 0.0  # requests per second, over the meter's window
    spilled: bool = False  # its holders were queued: the picker went past them


def place(replicas: Sequence[str], slots: int, adapters: Sequence[str],
          held: Mapping[str, frozenset[str]], demand: Mapping[str, Demand],
          ) -> dict[str, frozenset[str]]:
    """Replica key -> the adapters it should hold, for the ready ``replicas`` of one base
    (in their order), each with ``slots`` adapter slots; ``adapters`` are the deployed
    ones, ``held`` what each replica holds now."""
    if not replicas:
        return {}
    if len(adapters) <= slots:
        return {r: frozenset(adapters) for r in replicas}
    n = len(replicas)
    total = sum(demand.get(a, Demand()).rate for a in adapters)
    wanted: dict[str, int] = {}
    for a in adapters:
        d = demand.get(a, Demand())
        if d.rate <= 0:
            wanted[a] = 1
            continue
        copies = math.ceil(n * d.rate / total - 1e-9) + int(d.spilled)
        wanted[a] = max(1, min(n, copies))
    busiest = sorted(adapters, key=lambda a: (-demand.get(a, Demand()).rate, a))
    out: dict[str, set[str]] = {r: set() for r in replicas}
    traffic: dict[str, float] = dict.fromkeys(replicas, 0.0)
    order = {r: i for i, r in enumerate(replicas)}
    for a in busiest:
        rate = demand.get(a, Demand()).rate
        chosen: list[str] = []
        for _ in range(wanted[a]):
            chosen.append(min((r for r in replicas if r not in chosen), key=lambda r: (
                len(out[r]) >= slots, a not in held.get(r, frozenset()), len(out[r]),
                traffic[r], order[r])))
        for r in chosen:
            out[r].add(a)
            traffic[r] += rate / len(chosen)
    return {r: frozenset(s) for r, s in out.items()}


def keep_last_holders(placement: Mapping[str, frozenset[str]],
                      held: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """``placement`` with each replica also keeping what it holds and no other replica
    (of ``held``: the ready ones) holds yet, so an unload never removes the last copy;
    the next pass, once the new holder has loaded it, lets it go."""
    out: dict[str, frozenset[str]] = {}
    for r, want in placement.items():
        mine = held.get(r, frozenset())
        alone = {a for a in mine - want
                 if not any(a in s for other, s in held.items() if other != r)}
        out[r] = want | alone
    return out


@dataclass
class DemandMeter:
    """Turns the gateway's running counts (requests and spills per adapter) into
    :class:`Demand`: the rate over the last ``window_s``, measured between snapshots
    taken at least ``window_s / 6`` apart."""

    clock: Callable[[], float]
    window_s: float = DEMAND_WINDOW_S
    _snaps: list[tuple[float, dict[str, int], dict[str, int]]] = field(default_factory=list)

    def observe(self, requests: Mapping[str, int], spills: Mapping[str, int]
                ) -> dict[str, Demand]:
        now = self.clock()
        if not self._snaps or now - self._snaps[-1][0] >= self.window_s / 6:
            self._snaps.append((now, dict(requests), dict(spills)))
        # Keep the newest snapshot at least a window old (the baseline) and all after it.
        while len(self._snaps) > 2 and now - self._snaps[1][0] >= self.window_s:
            self._snaps.pop(0)
        then, old_requests, old_spills = self._snaps[0]
        elapsed = max(now - then, 1e-9)
        out: dict[str, Demand] = {}
        for a in set(requests) | set(spills):
            count = requests.get(a, 0) - old_requests.get(a, 0)
            spilled = spills.get(a, 0) - old_spills.get(a, 0) > 0
            if count > 0 or spilled:
                out[a] = Demand(rate=count / elapsed if elapsed > 0 else 0.0, spilled=spilled)
        return out


def placements(slots: Iterable[EngineSlot], deployed: Mapping[str, Sequence[str]],
               demand: Mapping[str, Demand]) -> dict[str, frozenset[str]]:
    """What each ready replica of a base with several should hold (the supervisor's
    engines; ``deployed``: base -> its deployed adapters), last copies kept. A base with
    one engine has nothing to place: it is left out, and its engine holds every adapter."""
    by_base: dict[str, list[EngineSlot]] = {}
    for s in slots:
        by_base.setdefault(s.base, []).append(s)
    out: dict[str, frozenset[str]] = {}
    for base, replicas in sorted(by_base.items()):
        if len(replicas) < 2:
            continue
        ready = sorted((s for s in replicas if s.state is EngineState.ready),
                       key=lambda s: s.key)
        held = {s.key: frozenset(s.adapters) for s in ready}
        want = place([s.key for s in ready], min((s.spec.max_loras for s in ready), default=1),
                     deployed.get(base, ()), held, demand)
        out.update(keep_last_holders(want, held))
    return out
