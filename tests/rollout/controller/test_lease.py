"""Holding a controller's lease for a pass, against real SQLite and PostgreSQL leases:
exclusive, waited for, taken over at expiry, reclaimed from a dead local process at once,
kept alive by its heartbeat, released whatever happens."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import pytest

from registry.errors import LeaseHeld
from registry.lease import holder_is_dead, local_holder
from registry.settings import Settings
from rollout.controller.lease import hold_lease
from tests.support.factories import RegistryFactory

NAME = "test-controller"


def test_a_second_holder_is_told_who_holds_the_lease(
    settings: Settings, open_registry: RegistryFactory
) -> None:
    a, b = open_registry(settings), open_registry(settings)
    with hold_lease(a.leases, NAME, "host-a:1"):
        with (pytest.raises(LeaseHeld, match=rf"another {NAME} holds the lease: host-a:1 "
                            r"since \d{4}-\d\d-\d\dT.*last heartbeat .*expires ") as e,
              hold_lease(b.leases, NAME, "host-b:2")):
            pytest.fail("two holders at once")
        assert e.value.hint is not None and "--wait-lease" in e.value.hint
    with hold_lease(b.leases, NAME, "host-b:2"):  # released at the end of the block
        held = b.leases.get(NAME)
        assert held is not None and held.holder == "host-b:2"
    assert b.leases.get(NAME) is None


def test_a_waiting_holder_proceeds_once_the_lease_is_released(
    settings: Settings, open_registry: RegistryFactory
) -> None:
    a, b = open_registry(settings), open_registry(settings)
    assert a.leases.acquire(NAME, "host-a:1", ttl_s=60) is not None
    threading.Timer(0.5, lambda: a.leases.release(NAME, "host-a:1")).start()
    t = time.monotonic()
    with hold_lease(b.leases, NAME, "host-b:2", wait_s=30, poll_s=0.05):
        assert time.monotonic() - t < 20
        held = b.leases.get(NAME)
        assert held is not None and held.holder == "host-b:2"


def test_an_expired_lease_is_taken_over(
    sqlite_settings: Settings, open_registry: RegistryFactory
) -> None:
    # SQLite only: on PostgreSQL a live session's advisory lock outlasts the row's expiry.
    a, b = open_registry(sqlite_settings), open_registry(sqlite_settings)
    assert a.leases.acquire(NAME, "stopped-heartbeating:1", ttl_s=0.3) is not None
    time.sleep(0.4)
    with hold_lease(b.leases, NAME, "heir:2"):
        held = b.leases.get(NAME)
        assert held is not None and held.holder == "heir:2"


def test_the_lease_of_a_killed_local_process_is_reclaimed_at_once(
    settings: Settings, open_registry: RegistryFactory
) -> None:
    gone = subprocess.Popen(["sleep", "60"])
    gone.kill()
    gone.wait()
    me = local_holder()
    dead = me.replace(f":{os.getpid()}:", f":{gone.pid}:")
    reg = open_registry(settings)
    assert reg.leases.acquire(NAME, dead, ttl_s=3600) is not None
    t = time.monotonic()
    with hold_lease(reg.leases, NAME, me):
        assert time.monotonic() - t < 30  # not the hour the dead holder's lease had left
        held = reg.leases.get(NAME)
        assert held is not None and held.holder == me


def test_only_a_local_process_known_to_have_exited_counts_as_dead() -> None:
    gone = subprocess.Popen(["sleep", "60"])
    gone.kill()
    gone.wait()
    me = local_holder()
    dead = me.replace(f":{os.getpid()}:", f":{gone.pid}:")
    assert holder_is_dead(dead)
    assert not holder_is_dead(me)
    assert not holder_is_dead(dead.replace(socket.gethostname(), "elsewhere", 1))
    assert not holder_is_dead(dead.rsplit(":", 1)[0] + ":other-namespace")
    assert not holder_is_dead(f"{socket.gethostname()}:1:{me.rsplit(':', 1)[1]}")  # init: alive
    assert not holder_is_dead("host-a:1")  # not made by local_holder


def test_the_heartbeat_keeps_the_lease_through_a_long_pass(
    sqlite_settings: Settings, open_registry: RegistryFactory
) -> None:
    a, b = open_registry(sqlite_settings), open_registry(sqlite_settings)
    with hold_lease(a.leases, NAME, "worker:1", ttl_s=0.3) as hb:
        time.sleep(1.0)  # three lease lifetimes
        assert b.leases.acquire(NAME, "intruder:9", ttl_s=5) is None
        assert not hb.lost


def test_a_lease_taken_over_meanwhile_is_reported_lost(
    sqlite_settings: Settings, open_registry: RegistryFactory
) -> None:
    a, b = open_registry(sqlite_settings), open_registry(sqlite_settings)
    with hold_lease(a.leases, NAME, "worker:1", ttl_s=0.3) as hb:
        b.leases.release(NAME, "worker:1")  # e.g. an operator freed it by hand
        assert b.leases.acquire(NAME, "other:2", ttl_s=60) is not None
        deadline = time.monotonic() + 10
        while not hb.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hb.lost
    held = b.leases.get(NAME)
    assert held is not None and held.holder == "other:2"  # releasing ours left theirs alone


def test_the_lease_is_released_when_the_pass_raises(
    settings: Settings, open_registry: RegistryFactory
) -> None:
    reg = open_registry(settings)
    with (pytest.raises(RuntimeError, match="the pass broke"),
          hold_lease(reg.leases, NAME, "worker:1")):
        raise RuntimeError("the pass broke")
    assert reg.leases.get(NAME) is None
