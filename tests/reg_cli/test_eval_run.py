"""`reg eval run`'s watch loop on a fake clock, and what it refuses before any gateway is
asked (a real SQLite registry, `reg` as a subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reg_cli.eval_run import api_key, gateway_url, watch
from registry.api import Registry
from registry.settings import Settings
from tests.support.cli import reg_fails, reg_ok
from tests.support.factories import ArtifactFactory


class FakeClock:
    """Time moves only when the loop sleeps, or when a run says it took a while."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_runs_start_every_interval_counting_each_runs_own_time() -> None:
    clock = FakeClock()
    starts: list[float] = []

    def once() -> int:
        starts.append(clock.now)
        clock.now += 600.0  # a ten-minute run
        return len(starts) % 2  # regressed on odd runs

    runs, code = watch(once, 86400.0, clock, max_runs=3)
    assert (runs, code) == (3, 1)
    assert starts == [0.0, 86400.0, 172800.0]
    assert clock.sleeps == [85800.0, 85800.0]


def test_a_run_longer_than_the_interval_starts_the_next_at_once() -> None:
    clock = FakeClock()

    def once() -> int:
        clock.now += 90.0
        return 0

    assert watch(once, 60.0, clock, max_runs=2) == (2, 0)
    assert clock.sleeps == [0.0]


def test_ctrl_c_ends_the_loop_cleanly_with_the_runs_done() -> None:
    clock = FakeClock()
    calls = 0

    def once() -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return 1

    assert watch(once, 3600.0, clock) == (2, 1)
    assert clock.sleeps == [3600.0, 3600.0]


def test_the_address_and_key_come_from_flag_then_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REG_GATEWAY_URL", "http://gw:9000/v1/")
    assert gateway_url(None) == "http://gw:9000"
    assert gateway_url("http://other:1/") == "http://other:1"
    monkeypatch.delenv("REG_API_KEY", raising=False)
    monkeypatch.setenv("REG_API_KEYS", " k1 ,k2")
    assert api_key() == "k1"
    monkeypatch.setenv("REG_API_KEY", "mine")
    assert api_key() == "mine"


def test_the_command_refuses_what_it_cannot_evaluate_by_name(
        tmp_path: Path, make_artifact: ArtifactFactory) -> None:
    s = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'r.db'}",
                 artifact_store=str(tmp_path / "store"))
    reg = Registry(s)
    try:
        reg.register_artifact(make_artifact("support-bot"))
        reg.promote("support-bot", 1, "production")
    finally:
        reg.close()
    p = reg_fails(s, "eval", "run", "support-bot:staging")
    assert "support-bot has no version in stage 'staging' (stages: production (v1))" in p.stderr
    p = reg_fails(s, "eval", "run", "support-bot", "--every", "soon")
    assert "--every 'soon' is not a duration" in p.stderr
    # Registered by hand with a recipe this reg does not read: nothing to rebuild from.
    p = reg_fails(s, "eval", "run", "support-bot", "--gateway", "http://127.0.0.1:9")
    assert "support-bot@v1 stores no recipe this reg reads" in p.stderr
    assert "No re-evaluation stored yet" in reg_ok(s, "eval", "history", "support-bot").stdout
