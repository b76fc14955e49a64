"""Adapter placement over replicas (pure) and the demand meter (a fake clock)."""

from __future__ import annotations

import pytest

from serving.engines.placement import Demand, DemandMeter, keep_last_holders, place
from tests.support.clock import FakeMonotonic

R = ("r0", "r1")
EIGHT = tuple(f"a{i}" for i in range(8))
NONE: dict[str, frozenset[str]] = {}


def copies(placement: dict[str, frozenset[str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for held in placement.values():
        for a in held:
            out[a] = out.get(a, 0) + 1
    return out


def test_with_room_for_all_every_replica_holds_every_adapter() -> None:
    got = place(R, 4, ("a", "b", "c"), NONE, {"a": Demand(50.0)})
    assert got == {"r0": frozenset("abc"), "r1": frozenset("abc")}


def test_eight_idle_adapters_over_two_replicas_of_four_slots_fill_both_once() -> None:
    got = place(R, 4, EIGHT, NONE, {})
    assert copies(got) == dict.fromkeys(EIGHT, 1)
    assert [len(s) for s in got.values()] == [4, 4]


def test_a_busy_adapter_gets_copies_in_proportion_to_its_share() -> None:
    demand = {"a0": Demand(90.0), **{a: Demand(1.0) for a in EIGHT[1:]}}
    got = place(R, 4, EIGHT, NONE, demand)
    assert copies(got)["a0"] == 2  # 90 % of the traffic: both replicas
    # a0's second copy puts one replica one over its slots (vLLM swaps the idle ones there)
    assert all(copies(got)[a] == 1 for a in EIGHT[1:])
    assert sorted(len(s) for s in got.values()) == [4, 5]


def test_spilling_past_queued_holders_adds_a_copy() -> None:
    even = {a: Demand(1.0) for a in EIGHT}
    assert copies(place(R, 4, EIGHT, NONE, even))["a3"] == 1
    spilled = {**even, "a3": Demand(1.0, spilled=True)}
    assert copies(place(R, 4, EIGHT, NONE, spilled))["a3"] == 2


def test_copies_stay_where_they_are_loaded() -> None:
    held = {"r0": frozenset({"a4", "a5", "a6", "a7"}), "r1": frozenset({"a0", "a1", "a2", "a3"})}
    assert place(R, 4, EIGHT, held, {}) == held


def test_a_replica_holding_all_keeps_only_its_slots_and_the_rest_move() -> None:
    held = {"r0": frozenset(EIGHT), "r1": frozenset()}  # e.g. r1 just restarted
    got = place(R, 4, EIGHT, held, {})
    assert len(got["r0"]) == 4 and got["r0"] | got["r1"] == set(EIGHT)


def test_traffic_spreads_over_the_replicas_by_rate() -> None:
    demand = {a: Demand(10.0 if a in ("a0", "a1") else 0.0) for a in EIGHT}
    got = place(R, 4, EIGHT, NONE, demand)
    r0 = next(r for r, s in got.items() if "a0" in s)
    assert "a1" not in got[r0], "the two busy adapters share one replica"


def test_more_adapters_than_all_slots_still_places_each_once() -> None:
    many = tuple(f"m{i}" for i in range(11))
    got = place(R, 4, many, NONE, {})
    assert copies(got) == dict.fromkeys(many, 1)
    assert sorted(len(s) for s in got.values()) == [5, 6]


@pytest.mark.parametrize("ready", [(), ("r0",)])
def test_no_or_one_ready_replica(ready: tuple[str, ...]) -> None:
    got = place(ready, 4, EIGHT, NONE, {})
    assert got == ({} if not ready else {"r0": frozenset(EIGHT)})


def test_the_last_ready_copy_is_kept_until_another_replica_holds_it() -> None:
    moved = {"r0": frozenset({"a1"}), "r1": frozenset({"a0"})}
    held = {"r0": frozenset({"a0", "a1"}), "r1": frozenset()}
    assert keep_last_holders(moved, held) == {"r0": frozenset({"a0", "a1"}),
                                              "r1": frozenset({"a0"})}
    loaded = {"r0": frozenset({"a0", "a1"}), "r1": frozenset({"a0"})}
    assert keep_last_holders(moved, loaded) == moved  # now r0 may let it go


def test_the_meter_measures_rates_over_its_window_and_forgets_idle_adapters() -> None:
    clock = FakeMonotonic()
    meter = DemandMeter(clock, window_s=60.0)
    assert meter.observe({}, {}) == {}
    clock.advance(10)
    got = meter.observe({"a": 20}, {})
    assert got == {"a": Demand(rate=2.0)}
    for _ in range(6):  # a minute and more with no new request for a
        clock.advance(12)
        got = meter.observe({"a": 20}, {})
    assert got == {}, "idle for a window: no demand"
    clock.advance(12)
    got = meter.observe({"a": 20, "b": 12}, {"b": 1})
    assert set(got) == {"b"} and got["b"].spilled and got["b"].rate > 0
    clock.advance(61)
    meter.observe({"a": 20, "b": 12}, {"b": 1})
    clock.advance(12)
    assert meter.observe({"a": 20, "b": 12}, {"b": 1}) == {}
