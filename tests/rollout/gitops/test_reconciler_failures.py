"""The reconciler's failure paths against a real registry: failed runs, backoff, its lease,
fault points, failed passes under --watch.

The trainer here is a fault injection (it raises, as an out-of-memory error
would); the success path trains for real in test_reconcile_e2e.py. How a lease is
held is tested in tests/rollout/controller/test_lease.py.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from recipes.loading.loader import LoadedRecipe
from registry.errors import LeaseHeld
from registry.settings import Settings
from rollout.controller.faults import FaultPoints
from rollout.gitops.apply import STEPS, Event
from rollout.gitops.plan import Action, BackoffPolicy
from rollout.gitops.reconciler import LEASE_NAME, Reconciler
from rollout.gitops.report import PassReport
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


def test_watch_runs_passes_until_stopped_and_stands_by_without_the_lease(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory,
) -> None:
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


class Killed(BaseException):
    """What the fault point raises here instead of exiting: nothing in the pass may catch it."""


def kill_here(step: str, subject: str) -> None:
    raise Killed(f"{step}@{subject}")


def test_a_fault_point_stops_the_pass_there_and_the_next_pass_resumes(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory,
) -> None:
    ws = workspace(keep=("support-bot", "faq-bot"))
    reg = open_registry(sqlite_settings)
    faults = FaultPoints.parse("after:run_created@faq-bot", STEPS, crash=kill_here)
    rec = Reconciler(reg, [ws / "recipes"], trainer=failing_trainer, policy=POLICY,
                     faults=faults)
    with pytest.raises(Killed, match="run_created@faq-bot"):
        rec.run_once()
    (run,) = reg.list_runs()  # faq-bot comes first; nothing after its fault point ran
    assert (run.model, run.status, run.phase) == ("faq-bot", "training", "start")

    again = Reconciler(reg, [ws / "recipes"], trainer=failing_trainer, policy=POLICY)
    report = again.run_once()
    assert [(o.model, o.run_id) for o in report.outcomes] == [("faq-bot", run.id),
                                                            ("support-bot", run.id + 1)]
    kinds = [e.kind for e in reg.events(model="faq-bot") if e.run_id == run.id]
    assert Event.run_resumed in kinds


def test_watch_records_a_failed_pass_as_an_event_and_retries_it(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory,
) -> None:
    import sqlalchemy as sa

    ws = workspace(keep=("support-bot",))
    reg = open_registry(sqlite_settings)
    rec = Reconciler(reg, [ws / "recipes"], trainer=failing_trainer,
                     policy=BackoffPolicy(base_s=0.01, max_attempts=100))
    stop = threading.Event()
    seen: list[str] = []

    def break_the_runs_table(rename: str) -> None:
        with reg.engine.begin() as conn:
            conn.execute(sa.text(rename))

    def on_pass(report: PassReport | None, err: BaseException | None) -> None:
        seen.append("ok" if report is not None else type(err).__name__)
        if len(seen) == 1:  # the registry breaks under the controller...
            break_the_runs_table("ALTER TABLE runs RENAME TO runs_gone")
        elif len(seen) == 2:  # ...and is repaired
            break_the_runs_table("ALTER TABLE runs_gone RENAME TO runs")
        else:
            stop.set()

    worker = threading.Thread(target=rec.watch, args=(0.05, stop), kwargs={"on_pass": on_pass})
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert seen == ["ok", "OperationalError", "ok"]
    (event,) = reg.events(kinds=[Event.pass_failed])
    assert event.actor == "reconciler" and "no such table: runs" in event.message
    assert len(reg.list_runs(model="support-bot")) == 2  # the pass after it went on



def test_a_pass_sweeps_what_a_killed_blob_writer_left_and_records_it(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory,
) -> None:
    ws = workspace(keep=("support-bot",))
    reg = open_registry(sqlite_settings)
    root = Path(reg.settings.artifact_store)
    left = root / "blobs" / "sha256" / "ab" / f".tmp.{'ab' * 32}.dead0001"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"half a blob")  # no process holds its lock: its writer died
    Reconciler(reg, [ws / "recipes"], trainer=failing_trainer, policy=POLICY).run_once()
    assert not left.exists()
    (event,) = reg.events(kinds=[Event.store_swept])
    assert event.data == {"keys": [left.relative_to(root).as_posix()]}
    assert "1 half-written" in event.message
