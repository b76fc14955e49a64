"""The reconciler's failure paths against a real registry: failed runs, backoff, leases.

The trainer here is a fault injection (it raises, as an out-of-memory error
would); the success path trains for real in test_reconcile_e2e.py.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from recipes.loading.loader import LoadedRecipe
from registry.errors import LeaseHeld
from registry.settings import Settings
from rollout.gitops.plan import Action, BackoffPolicy
from rollout.gitops.reconciler import LEASE_NAME, Reconciler
from tests.support.clock import FakeClock
from tests.support.factories import RegistryFactory, WorkspaceFactory


class InjectedFault(RuntimeError):
    pass


def failing_trainer(loaded: LoadedRecipe, workdir: Path, *, resume: bool = True,
                    progress: bool = False, identity: dict[str, Any] | None = None) -> Any:
    workdir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("trainer").warning("loading %s", loaded.name)
    raise InjectedFault(f"injected: out of memory while training {loaded.name}")


POLICY = BackoffPolicy(base_s=60, factor=2, max_delay_s=3600, max_attempts=2)


def test_failed_run_keeps_log_tail_and_backs_off(
    workspace: WorkspaceFactory, settings: Settings, open_registry: RegistryFactory,
    clock: FakeClock,
) -> None:
    ws = workspace(keep=("support-bot",))
    reg = open_registry(settings, clock)
    rec = Reconciler(reg, [ws / "recipes"], trainer=failing_trainer, policy=POLICY, clock=clock)

    first = rec.run_once()
    (outcome,) = first.outcomes
    assert outcome.result == "failed"
    assert outcome.error is not None and "injected: out of memory" in outcome.error
    (run,) = reg.list_runs(model="support-bot")
    assert (run.status, run.phase, run.attempts) == ("failed", "train", 1)
    assert "InjectedFault" in run.log_tail and "loading support-bot" in run.log_tail
    assert run.next_retry_at is not None
    assert Path(run.workdir).name == f"support-bot-{run.spec_hash[7:19]}-1"
    assert Path(run.workdir).parent == settings.home / "runs"
    kinds = [e.kind for e in reg.events(model="support-bot") if e.run_id == run.id]
    assert "reconcile.failed" in kinds

    # Within the backoff: no hot loop, nothing new.
    clock.advance(30)
    plan, _ = rec.plan()
    assert (plan.models[0].action, plan.models[0].due) == (Action.retry, False)
    assert rec.run_once().outcomes == []
    assert len(reg.list_runs(model="support-bot")) == 1

    # After it: attempt 2, in its own run and workdir.
    clock.advance(31)
    second = rec.run_once()
    assert [o.result for o in second.outcomes] == ["failed"]
    runs = reg.list_runs(model="support-bot")
    assert sorted(r.attempts for r in runs) == [1, 2]

    # Limit reached: blocked, and `reg plan` would exit 1.
    clock.advance(3600)
    plan, _ = rec.plan()
    assert plan.models[0].action is Action.blocked
    assert "limit 2" in plan.models[0].reason
    assert plan.exit_code == 1
    assert rec.run_once().outcomes == []


def test_recipe_error_blocks_only_its_model(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory,
) -> None:
    ws = workspace(keep=("support-bot", "faq-bot"),
                   edit={"faq-bot": lambda t: t.replace("r: 8", "r: 7")})
    reg = open_registry(sqlite_settings)
    rec = Reconciler(reg, [ws / "recipes"], trainer=failing_trainer, policy=POLICY)
    plan, _ = rec.plan()
    actions = {m.model: m.action for m in plan.models}
    assert actions == {"faq-bot": Action.blocked, "support-bot": Action.train}
    faq = plan.get("faq-bot")
    assert faq is not None and any("faq-bot.yaml:" in p.rendered and "adapter.r" in p.rendered
                                   for p in faq.problems)
    report = rec.run_once()
    assert [o.model for o in report.outcomes] == ["support-bot"]  # still attempted


def test_second_reconciler_is_told_who_holds_the_lease(
    workspace: WorkspaceFactory, settings: Settings, open_registry: RegistryFactory,
) -> None:
    ws = workspace(keep=("support-bot",))
    reg = open_registry(settings)
    held = reg.leases.acquire(LEASE_NAME, "other-host:4242", ttl_s=60)
    assert held is not None
    rec = Reconciler(reg, [ws / "recipes"], trainer=failing_trainer, policy=POLICY)
    with pytest.raises(LeaseHeld, match=r"other-host:4242 since \d{4}-\d\d-\d\dT"):
        rec.run_once()
    assert reg.list_runs() == []  # nothing was done without the lease

    # A waiting reconciler proceeds once the holder lets go.
    threading.Timer(1.0, lambda: reg.leases.release(LEASE_NAME, "other-host:4242")).start()
    report = rec.run_once(wait_lease_s=30)
    assert [o.model for o in report.outcomes] == ["support-bot"]
    assert reg.leases.get(LEASE_NAME) is None  # released after the pass


def test_dead_holders_lease_expires_and_is_taken_over(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory,
) -> None:
    ws = workspace(keep=("support-bot",))
    reg = open_registry(sqlite_settings)
    assert reg.leases.acquire(LEASE_NAME, "dead-host:1", ttl_s=0.5) is not None
    time.sleep(0.6)  # the holder stopped heartbeating
    rec = Reconciler(reg, [ws / "recipes"], trainer=failing_trainer, policy=POLICY)
    assert [o.model for o in rec.run_once().outcomes] == ["support-bot"]


def test_heartbeat_keeps_the_lease_through_a_long_step(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory,
) -> None:
    ws = workspace(keep=("support-bot",))
    reg = open_registry(sqlite_settings)
    seen: list[bool] = []

    def slow_failing(loaded: LoadedRecipe, workdir: Path, **kw: Any) -> Any:
        time.sleep(1.5)  # three lease lifetimes of 0.5 s
        seen.append(reg.leases.acquire(LEASE_NAME, "intruder:9", ttl_s=5) is None)
        raise InjectedFault("done")

    rec = Reconciler(reg, [ws / "recipes"], trainer=slow_failing, policy=POLICY,
                     lease_ttl_s=0.5)
    rec.run_once()
    assert seen == [True]  # the intruder could not take a lease that was being renewed


def test_lease_of_a_killed_local_process_is_reclaimed_at_once(
    workspace: WorkspaceFactory, settings: Settings, open_registry: RegistryFactory,
) -> None:
    import subprocess

    from rollout.gitops.reconciler import holder_is_dead, local_holder

    gone = subprocess.Popen(["sleep", "60"])
    gone.kill()
    gone.wait()
    me = local_holder()
    dead = me.replace(f":{os.getpid()}:", f":{gone.pid}:")
    assert holder_is_dead(dead) and not holder_is_dead(me)
    assert not holder_is_dead(dead.replace(socket.gethostname(), "elsewhere", 1))
    ws = workspace(keep=("support-bot",))
    reg = open_registry(settings)
    assert reg.leases.acquire(LEASE_NAME, dead, ttl_s=3600) is not None
    rec = Reconciler(reg, [ws / "recipes"], trainer=failing_trainer, policy=POLICY)
    t = time.monotonic()
    assert [o.model for o in rec.run_once().outcomes] == ["support-bot"]
    assert time.monotonic() - t < 30  # not the hour the dead holder's lease had left


def test_watch_runs_passes_until_stopped_and_stands_by_without_the_lease(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory,
) -> None:
    from rollout.gitops.reconciler import PassReport

    ws = workspace(keep=("support-bot",))
    reg = open_registry(sqlite_settings)
    rec = Reconciler(reg, [ws / "recipes"], trainer=failing_trainer,
                     policy=BackoffPolicy(base_s=0.01, max_attempts=100))
    stop = threading.Event()
    seen: list[PassReport | BaseException] = []

    def on_pass(report: PassReport | None, err: BaseException | None) -> None:
        seen.append(report if report is not None else err)  # type: ignore[arg-type]
        if len(seen) == 2:
            reg.leases.acquire(LEASE_NAME, "standby-test:1", ttl_s=60)
        if len(seen) >= 4:
            stop.set()

    worker = threading.Thread(target=rec.watch, args=(0.05, stop), kwargs={"on_pass": on_pass})
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert [type(x).__name__ for x in seen] == ["PassReport", "PassReport", "LeaseHeld",
                                                "LeaseHeld"]
    assert len(reg.list_runs(model="support-bot")) == 2  # one attempt per active pass
