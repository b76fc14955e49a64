"""serving.gateway.picker: ordering a version's replicas by adapter affinity and load
(pure, no I/O; loads are built by hand, the clock is a number)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from serving.engines.load import EngineLoad
from serving.gateway.picker import Fit, ReplicaView, fit, pick

NOW = 100.0
Replica = Callable[..., ReplicaView]


@pytest.fixture
def replica() -> Replica:
    def make(key: str, *adapters: str, slots: int = 4, waiting: float = 0.0,
             running: float = 0.0, scraped_ago: float | None = 0.05, ready: bool = True,
             in_flight: int = 0) -> ReplicaView:
        load = (None if scraped_ago is None else
                EngineLoad(waiting=waiting, running=running, at=NOW - scraped_ago))
        return ReplicaView(key=key, ready=ready, adapters=frozenset(adapters), slots=slots,
                           load=load, in_flight=in_flight)
    return make


def keys(adapter: str | None, *replicas: ReplicaView) -> list[str]:
    return [p.key for p in pick(adapter, replicas, NOW)]


def test_holders_come_before_free_slots_even_when_busier(replica: Replica) -> None:
    busy_holder = replica("r0", "bot@v1", running=9, waiting=1)
    idle_free = replica("r1", "other@v1")
    assert keys("bot@v1", idle_free, busy_holder) == ["r0", "r1"]
    first, second = pick("bot@v1", [idle_free, busy_holder], NOW)
    assert (first.fit, second.fit) == (Fit.loaded, Fit.free_slot)


def test_a_replica_with_neither_the_adapter_nor_a_free_slot_is_never_tried(
        replica: Replica) -> None:
    full = replica("r0", "a", "b", slots=2)
    holder = replica("r1", "bot@v1", "a", slots=2)
    assert keys("bot@v1", full, holder) == ["r1"]
    assert keys("c", full, replica("r2", "a", "b", slots=2)) == []


def test_not_ready_replicas_are_left_out(replica: Replica) -> None:
    assert keys("bot@v1", replica("r0", "bot@v1", ready=False), replica("r1", "bot@v1")) == [
        "r1"]
    assert fit(replica("r0", "bot@v1", ready=False), "bot@v1") is None


@pytest.mark.parametrize(("loads", "expected"), [
    pytest.param([(0, 3), (0, 1)], ["r1", "r0"], id="fewer-running-first"),
    pytest.param([(2, 0), (1, 9)], ["r1", "r0"], id="waiting-weighs-before-running"),
    pytest.param([(0, 0), (0, 0)], ["r0", "r1"], id="ties-by-key"),
])
def test_holders_are_ordered_by_queue_then_running(
        replica: Replica, loads: list[tuple[float, float]], expected: list[str]) -> None:
    rs = [replica(f"r{i}", "bot@v1", waiting=w, running=r) for i, (w, r) in enumerate(loads)]
    assert keys("bot@v1", *reversed(rs)) == expected


def test_the_gateways_own_in_flight_breaks_ties_the_scrape_cannot_see_yet(
        replica: Replica) -> None:
    assert keys("bot@v1", replica("r0", "bot@v1", in_flight=3),
                replica("r1", "bot@v1", in_flight=1)) == ["r1", "r0"]


def test_a_queued_holder_spills_onto_a_free_slot(replica: Replica) -> None:
    queued = replica("r0", "bot@v1", waiting=4, running=16)
    free = replica("r1", "x")
    ordered = pick("bot@v1", [queued, free], NOW)
    assert [(p.key, p.fit) for p in ordered] == [("r1", Fit.free_slot), ("r0", Fit.loaded)]
    # Just under the threshold, the adapter stays where it is loaded.
    assert keys("bot@v1", replica("r0", "bot@v1", waiting=3, running=16), free) == ["r0", "r1"]
    assert [p.key for p in pick("bot@v1", [queued, free], NOW, spill_waiting=8)] == ["r0", "r1"]


def test_two_queued_holders_are_still_tried_by_load_after_a_free_slot(
        replica: Replica) -> None:
    ordered = keys("bot@v1", replica("r0", "bot@v1", waiting=9), replica("r1", "bot@v1",
                   waiting=5), replica("r2", slots=1))
    assert ordered == ["r2", "r1", "r0"]


@pytest.mark.parametrize("scraped_ago", [
    pytest.param(2.5, id="older-than-2s"),
    pytest.param(None, id="never-scraped"),
])
def test_a_stale_replica_goes_last_whatever_its_last_load_said(
        replica: Replica, scraped_ago: float | None) -> None:
    stale = replica("r0", "bot@v1", scraped_ago=scraped_ago)
    busy = replica("r1", "bot@v1", running=12, waiting=6)
    free = replica("r2")
    ordered = pick("bot@v1", [stale, busy, free], NOW)
    assert [p.key for p in ordered] == ["r2", "r1", "r0"]
    assert [p.stale for p in ordered] == [False, False, True]


def test_staleness_is_strictly_after_the_limit(replica: Replica) -> None:
    at_limit = replica("r0", "bot@v1", running=5, scraped_ago=2.0)
    assert pick("bot@v1", [at_limit], NOW)[0].stale is False
    assert pick("bot@v1", [at_limit], NOW, stale_after_s=1.9)[0].stale is True


def test_base_model_requests_use_every_ready_replica_by_load(replica: Replica) -> None:
    assert keys(None, replica("r0", "a", running=2), replica("r1", slots=0),
                replica("r2", ready=False)) == ["r1", "r0"]


def test_no_replicas_no_picks() -> None:
    assert pick("bot@v1", [], NOW) == []
