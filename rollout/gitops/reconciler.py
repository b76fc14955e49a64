"""The reconciler: carries out a Plan, one model at a time, in straight repeatable steps.

One pass (:meth:`Reconciler.run_once`):

1. take the registry's ``reconciler`` lease (a heartbeat thread keeps it);
2. read desired and actual state, decide with :func:`make_plan` (pure);
3. close runs whose spec hash is no longer wanted;
4. for each model whose action is due, in order:
   create (or resume) its run -> train in ``$REG_HOME/runs/<run key>`` with
   checkpoints (a resumed run continues from its newest complete one) ->
   store the artifact -> register the version (``ready`` or ``rejected``
   from the gates) -> finish the run -> deploy actions (``promote_to``);
   any error becomes a ``failed`` run with the tail of its log, and the next
   model goes on;
5. archive what ``--prune`` decided; release the lease.

Every step is safe to repeat, so a pass killed at any moment is repaired by
the next: an interrupted run is resumed in its workdir; training returns a
finished artifact at once; the artifact store is content-addressed; the
version is unique per (model, spec hash) and registering is idempotent; the
deploy action is recorded as pending on the run before registration and done
after it, so it runs exactly once even across a kill.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from recipes.core.errors import RegError
from recipes.identity import DigestCache, SpecIdentity
from recipes.loading.loader import LoadedRecipe
from reg_cli.startup import gc_paused
from registry.errors import LeaseHeld
from registry.versions import VersionStatus
from rollout.gitops.actual import snapshot
from rollout.gitops.cache import IdentityCache, RecipeCache
from rollout.gitops.desired import (
    DEPLOY_DONE,
    DEPLOY_NONE,
    DEPLOY_PENDING,
    DesiredState,
    desired_state,
    digest_cache,
    identity_cache,
    recipe_cache,
    workdir_for,
)
from rollout.gitops.gitinfo import GitLineage
from rollout.gitops.plan import Action, BackoffPolicy, ModelPlan, Plan, make_plan

if TYPE_CHECKING:
    from registry.api import Registry
    from registry.tables import RunPublic, VersionPublic

log = logging.getLogger("reg.reconcile")

LEASE_NAME = "reconciler"
FAULT_ENV = "REG_FAULT"
ACTOR = "reconciler"
LOG_NAME = "run.log"
TAIL_LINES = 40

# Step names for REG_FAULT=after:<step>[@model] (tests kill the process there).
STEPS = ("run_created", "trained", "artifact_stored", "registered", "run_finished", "deployed")


def utcnow() -> datetime:
    return datetime.now(UTC)


def fault_point(step: str, model: str) -> None:
    """Die like ``kill -9`` after ``step`` when $REG_FAULT asks for it (crash-safety tests).

    ``REG_FAULT=after:trained`` or ``after:trained@support-bot``; several, comma-separated.
    """
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    for item in spec.split(","):
        kind, _, rest = item.strip().partition(":")
        name, _, who = rest.partition("@")
        if kind == "after" and name == step and who in ("", model):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(137)


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:")
    except OSError:
        return "-"


def local_holder() -> str:
    """``host:pid:pid-namespace``: who holds the lease, precise enough to tell it is dead."""
    return f"{socket.gethostname()}:{os.getpid()}:{_pid_namespace()}"


def holder_is_dead(holder: str) -> bool:
    """True only when ``holder`` is a process of this host and pid namespace that has exited.

    Then its lease can be reclaimed at once instead of after its expiry. Any
    doubt (another host, another container, a reused pid) answers False, and
    the lease simply expires.
    """
    parts = holder.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or parts[2] != _pid_namespace():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def backoff_from_env(env: dict[str, str] | None = None) -> BackoffPolicy:
    """$REG_RETRY_BASE_S, $REG_RETRY_MAX_S, $REG_RETRY_MAX_ATTEMPTS over the defaults."""
    env = dict(os.environ) if env is None else env
    d = BackoffPolicy()
    return BackoffPolicy(
        base_s=float(env.get("REG_RETRY_BASE_S", d.base_s)),
        factor=d.factor,
        max_delay_s=float(env.get("REG_RETRY_MAX_S", d.max_delay_s)),
        max_attempts=int(env.get("REG_RETRY_MAX_ATTEMPTS", d.max_attempts)),
    )


class TrainResultLike(Protocol):
    @property
    def artifact_dir(self) -> Path: ...


class Trainer(Protocol):
    """``recipes.training.entry.train``'s shape; ``identity`` is the manifest's identity."""

    def __call__(self, loaded: LoadedRecipe, workdir: Path, *, resume: bool = ...,
                 progress: bool = ..., identity: dict[str, Any] | None = ...) -> Any: ...


def default_trainer(loaded: LoadedRecipe, workdir: Path, *, resume: bool = True,
                    progress: bool = True, identity: dict[str, Any] | None = None) -> Any:
    # Imported here: torch and transformers take seconds to import, and
    # `reg plan` or a no-op pass never needs them.
    from recipes.training.entry import train

    return train(loaded, workdir, resume=resume, progress=progress, identity=identity)


def manifest_identity(loaded: LoadedRecipe, ident: SpecIdentity) -> dict[str, Any]:
    """The identity the artifact records, carrying the spec hash this pass planned.

    If a data file changes between planning and training, the version is
    registered under the planned hash and the next pass sees the new hash and
    trains again: never a version whose hash nobody asked for.
    """
    from recipes.training.entry import default_identity

    return {**default_identity(loaded), "spec_hash": ident.spec_hash,
            "data_digests": dict(ident.data_digests), "base_model": dict(ident.base_model)}


class Observer(Protocol):
    """What a progress display is told. Every method is optional in spirit: no-ops are fine."""

    def planned(self, plan: Plan) -> None: ...
    def step(self, model: str, step: str, detail: str = "") -> None: ...
    def finished(self, outcome: Outcome) -> None: ...


class QuietObserver:
    def planned(self, plan: Plan) -> None:
        pass

    def step(self, model: str, step: str, detail: str = "") -> None:
        pass

    def finished(self, outcome: Outcome) -> None:
        pass


@dataclass
class Outcome:
    """What one model's actions came to in a pass."""

    model: str
    action: Action
    result: str  # registered | rejected | deployed | failed | skipped | cancelled | archived
    version: int | None = None
    run_id: int | None = None
    error: str | None = None
    seconds: float = 0.0
    trained: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "action": self.action.value, "result": self.result,
                "version": self.version, "run_id": self.run_id, "error": self.error,
                "seconds": round(self.seconds, 3), "trained": self.trained}


@dataclass
class PassReport:
    plan: Plan
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "failed"]

    @property
    def trained(self) -> int:
        return sum(1 for o in self.outcomes if o.trained)

    def as_json(self) -> dict[str, Any]:
        return {"plan": self.plan.as_json(), "outcomes": [o.as_json() for o in self.outcomes],
                "seconds": round(self.seconds, 3)}


class RunLog:
    """The run's own log, ``<workdir>/run.log``: step lines, captured log records, tracebacks.

    Appended to (a resumed run keeps the earlier attempt's lines) and flushed
    per line, so what a crash leaves behind is readable by ``reg logs``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, text: str) -> None:
        stamp = utcnow().isoformat(timespec="seconds")
        with self.path.open("a", encoding="utf-8") as f:
            for line in text.rstrip("\n").splitlines() or [""]:
                f.write(f"{stamp} {line}\n")

    def tail(self, n: int = TAIL_LINES) -> str:
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Copy log records (transformers, trl, peft, ours) into the run log meanwhile."""
        handler = logging.FileHandler(self.path, encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            handler.close()


class _Heartbeat:
    """Renews the lease every ttl/3 seconds while a pass runs (training can take long)."""

    def __init__(self, renew: Callable[[], bool], ttl_s: float) -> None:
        self._renew = renew
        self._period = max(ttl_s / 3, 0.05)
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._loop, name="reg-lease-heartbeat",
                                        daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._period):
            try:
                if not self._renew():
                    self.lost = True
                    log.warning("the reconciler lease was taken over by another holder")
                    return
            except Exception:  # a transient DB error: try again next period
                log.exception("lease heartbeat failed")

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Reconciler:
    """Makes the registry follow the recipes under ``paths``."""

    def __init__(
        self,
        registry: Registry,
        paths: Sequence[Path],
        *,
        trainer: Trainer | None = None,
        policy: BackoffPolicy | None = None,
        observer: Observer | None = None,
        progress: bool = False,
        actor: str = ACTOR,
        holder: str | None = None,
        lease_ttl_s: float = 60.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.registry = registry
        self.paths = list(paths)
        self.trainer: Trainer = trainer or default_trainer
        self.policy = policy or backoff_from_env()
        self.observer: Observer = observer or QuietObserver()
        self.progress = progress
        self.actor = actor
        self.holder = holder or local_holder()
        self.lease_ttl_s = float(os.environ.get("REG_LEASE_TTL_S", lease_ttl_s))
        self.clock = clock or registry.clock
        self.home = registry.settings.home
        self._cache: DigestCache | None = None
        self._recipes: RecipeCache | None = None
        self._identities: IdentityCache | None = None

    # -- deciding --------------------------------------------------------------------------------

    @property
    def cache(self) -> DigestCache:
        if self._cache is None:
            self._cache = digest_cache(self.home)
        return self._cache

    def plan(self, *, prune: bool = False) -> tuple[Plan, DesiredState]:
        """Read both states and decide; writes to no registry table (``reg plan`` is this)."""
        if self._recipes is None or self._identities is None:
            self._recipes, self._identities = recipe_cache(self.home), identity_cache(self.home)
        with gc_paused():
            state = desired_state(self.paths, self.cache, GitLineage(), self._recipes,
                                  self._identities)
            versions, runs = snapshot(self.registry, state.desired)
            plan = make_plan(state.desired, state.blocked, versions, runs, now=self.clock(),
                             policy=self.policy, prune=prune)
        return plan, state

    # -- the lease -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lease(self, wait_s: float = 0.0, poll_s: float = 1.0) -> Iterator[_Heartbeat]:
        """Hold the registry's reconciler lease, waiting up to ``wait_s`` for it."""
        leases = self.registry.leases
        deadline = time.monotonic() + wait_s
        while leases.acquire(LEASE_NAME, self.holder, self.lease_ttl_s) is None:
            held = leases.get(LEASE_NAME)
            if held is not None and holder_is_dead(held.holder):
                # Its process is gone (e.g. kill -9): reclaim now rather than at expiry.
                # release() deletes only that holder's row, so two reclaimers cannot
                # both win: the insert in acquire() admits one.
                leases.release(LEASE_NAME, held.holder)
                log.warning("reclaimed the lease of %s, which has exited", held.holder)
                continue
            if time.monotonic() >= deadline:
                who = (f"{held.holder} since {held.acquired_at.isoformat(timespec='seconds')} "
                       f"(last heartbeat {held.heartbeat_at.isoformat(timespec='seconds')}, "
                       f"expires {held.expires_at.isoformat(timespec='seconds')})"
                       if held else "another process")
                raise LeaseHeld(
                    f"another reconciler holds the lease: {who}",
                    hint="wait for it to finish (`--wait-lease SECONDS`), or, if that process "
                    "is gone, the lease expires by itself",
                )
            time.sleep(poll_s)
        try:
            with _Heartbeat(lambda: leases.renew(LEASE_NAME, self.holder, self.lease_ttl_s),
                            self.lease_ttl_s) as hb:
                yield hb
        finally:
            with contextlib.suppress(Exception):
                leases.release(LEASE_NAME, self.holder)

    # -- doing -----------------------------------------------------------------------------------

    def run_once(self, *, prune: bool = False, wait_lease_s: float = 0.0) -> PassReport:
        """One reconcile pass under the lease. Failures of one model never stop the others."""
        started = time.monotonic()
        with self.lease(wait_lease_s) as hb:
            plan, state = self.plan(prune=prune)
            self.observer.planned(plan)
            report = PassReport(plan)
            for stale in plan.stale_runs:
                if stale.version is not None:
                    self._finish(int(stale.run_id), stale.model, stale.version,
                                 stale.version_status == "ready")
                else:
                    self._cancel(int(stale.run_id), stale.reason)
            for m in plan.models:
                if hb.lost:
                    break  # another reconciler owns the registry now; it will carry on
                if not m.actionable:
                    continue
                t0 = time.monotonic()
                if m.action is Action.deploy:
                    outcome = self._deploy_existing(m)
                else:
                    outcome = self._train(m, state.loaded[m.model], state.identities[m.model])
                outcome.seconds = time.monotonic() - t0
                self.observer.finished(outcome)
                report.outcomes.append(outcome)
            for p in plan.prune:
                report.outcomes.append(self._archive(p.model, int(p.version.lstrip("v")),
                                                     p.reason))
        report.seconds = time.monotonic() - started
        return report

    def watch(self, interval_s: float, stop: threading.Event, *, prune: bool = False,
              on_pass: Callable[[PassReport | None, BaseException | None], None] | None = None,
              ) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set. A held lease means standby."""
        while not stop.is_set():
            try:
                report = self.run_once(prune=prune)
                if on_pass:
                    on_pass(report, None)
            except (LeaseHeld, RegError) as e:
                if on_pass:
                    on_pass(None, e)
            stop.wait(interval_s)

    def _event(self, kind: str, m: str, message: str, *, run_id: int | None = None,
               version: int | None = None, data: dict[str, Any] | None = None) -> None:
        self.registry.record_event(kind, actor=self.actor, model=m, run_id=run_id,
                                   version=version, message=message, data=data)

    def _cancel(self, run_id: int, reason: str) -> None:
        run = self.registry.update_run(run_id, status="cancelled", error=f"cancelled: {reason}",
                                       finished_at=self.clock(), actor=self.actor)
        self._event("reconcile.run_cancelled", run.model, f"run {run_id} cancelled: {reason}",
                    run_id=run_id)

    def _finish(self, run_id: int, model: str, number: int, ready: bool,
                runlog: RunLog | None = None) -> None:
        """Mark a run done with the version it registered (repeatable)."""
        if runlog is None:
            run = self.registry.get_run(run_id)
            runlog = RunLog(Path(run.workdir) / LOG_NAME) if run.workdir else None
        self.registry.update_run(run_id, status="succeeded" if ready else "rejected",
                                 phase="done", version_number=number,
                                 finished_at=self.clock(),
                                 log_tail=runlog.tail() if runlog else "", error="",
                                 actor=self.actor)
        version = self.registry.get_version(model, number)
        self._event(f"reconcile.{'registered' if ready else 'rejected'}", model,
                    f"{version.ref} {version.status}"
                    + ("" if ready else f": gates failed {_failed_gates(version)}"),
                    run_id=run_id, version=number,
                    data={"spec_hash": version.spec_hash, "gates_passed": version.gates_passed})
        fault_point("run_finished", model)

    def _start_run(self, m: ModelPlan, loaded: LoadedRecipe, workdir: Path) -> RunPublic:
        git = m.git
        if m.resume and m.run_id is not None:
            run = self.registry.update_run(int(m.run_id), status="training", phase="resume",
                                           actor=self.actor)
            self._event("reconcile.run_resumed", m.model,
                        f"resuming run {run.id} in {workdir}", run_id=run.id)
            return run
        deploy = DEPLOY_PENDING if loaded.promote_to else DEPLOY_NONE
        run = self.registry.create_run(
            m.model, m.spec_hash or "", status="training", phase="start", workdir=str(workdir),
            recipe_path=m.recipe_path, git_commit=git.commit if git else None,
            git_dirty=git.dirty if git else None, creator=self.actor, attempts=m.attempt,
            details={"deploy": deploy, "run_key": m.run_key,
                     "promote_to": loaded.promote_to})
        self._event("reconcile.run_started", m.model,
                    f"run {run.id}: {m.reason} (attempt {m.attempt})", run_id=run.id,
                    data={"spec_hash": m.spec_hash, "attempt": m.attempt,
                          "diff": m.diff is not None and not m.diff.empty})
        return run

    def _train(self, m: ModelPlan, loaded: LoadedRecipe, ident: SpecIdentity) -> Outcome:
        assert m.run_key is not None and m.spec_hash is not None  # planner sets both for train
        workdir = workdir_for(self.home, m.run_key)
        runlog = RunLog(workdir / LOG_NAME)
        self.observer.step(m.model, "run", m.reason)
        run = self._start_run(m, loaded, workdir)
        run_id = run.id
        runlog.write(f"run {run_id} ({m.run_key}) {'resumed' if m.resume else 'started'}: "
                     f"{m.reason}; spec {m.spec_hash}")
        fault_point("run_created", m.model)
        phase = "train"
        try:
            self.registry.update_run(run_id, phase="train", actor=self.actor)
            self.observer.step(m.model, "train", str(workdir))
            with runlog.capture():
                result = self.trainer(loaded, workdir, resume=True, progress=self.progress,
                                      identity=manifest_identity(loaded, ident))
            artifact_dir = Path(result.artifact_dir)
            runlog.write(f"trained: artifact {artifact_dir}")
            fault_point("trained", m.model)

            phase = "register"
            self.registry.update_run(run_id, phase="register", actor=self.actor)
            self.observer.step(m.model, "register", str(artifact_dir))
            # Blobs first (content-addressed, idempotent): a crash after this leaves
            # only unreferenced blobs, which the registration below reuses.
            digest, _, _ = self.registry.store.put_artifact(artifact_dir)
            runlog.write(f"artifact stored: {digest}")
            fault_point("artifact_stored", m.model)
            git = m.git
            version = self.registry.register_artifact(
                artifact_dir, run_id=run_id, git_commit=git.commit if git else None,
                git_dirty=git.dirty if git else None, recipe_path=m.recipe_path,
                creator=self.actor)
            runlog.write(f"registered {version.ref} ({version.status})")
            fault_point("registered", m.model)
        except Exception as e:
            return self._fail(m, run_id, runlog, phase, e)

        ready = VersionStatus(version.status) is VersionStatus.ready
        self._finish(run_id, m.model, version.number, ready, runlog)
        outcome = Outcome(m.model, m.action, "registered" if ready else "rejected",
                          version=version.number, run_id=run_id, trained=True)
        if ready and loaded.promote_to:
            err = self._deploy(m.model, version, loaded.promote_to,
                               str(loaded.path))
            if err is not None:
                outcome.error = err
        return outcome

    def _fail(self, m: ModelPlan, run_id: int, runlog: RunLog, phase: str,
              e: BaseException) -> Outcome:
        message = f"{type(e).__name__}: {e}"
        hint = getattr(e, "hint", None)
        if hint:
            message += f" (hint: {hint})"
        runlog.write(f"FAILED in {phase}: {message}")
        runlog.write("".join(traceback.format_exception(e)))
        failures = m.failures + 1
        now = self.clock()
        nxt = None if self.policy.exhausted(failures) else self.policy.next_retry_at(failures, now)
        self.registry.update_run(run_id, status="failed", phase=phase, error=message,
                                 log_tail=runlog.tail(), finished_at=now, next_retry_at=nxt,
                                 actor=self.actor)
        self._event("reconcile.failed", m.model,
                    f"run {run_id} failed in {phase}: {message}"
                    + (f"; retry after {nxt.isoformat(timespec='seconds')}" if nxt else
                       f"; retry limit {self.policy.max_attempts} reached"),
                    run_id=run_id, data={"phase": phase, "attempt": m.attempt})
        log.warning("%s: run %s failed in %s: %s", m.model, run_id, phase, message)
        return Outcome(m.model, m.action, "failed", run_id=run_id, error=message)

    def _deploy(self, model: str, version: VersionPublic, stage: str,
                recipe: str) -> str | None:
        """Apply ``deploy.promote_to`` once; returns an error message instead of raising."""
        self.observer.step(model, "deploy", f"{version.ref} -> {stage}")
        try:
            if stage not in version.stages:
                self.registry.promote(model, version.number, stage, actor=self.actor,
                                      reason=f"deploy.promote_to in {recipe}")
            fault_point("deployed", model)
            self._mark_deployed(model, version.spec_hash)
        except RegError as e:
            self._event("reconcile.deploy_failed", model, f"promote {version.ref} to {stage}: "
                        f"{e}", version=version.number)
            return f"deploy: {e}"
        self._event("reconcile.deployed", model, f"{version.ref} promoted to {stage}",
                    version=version.number, data={"stage": stage})
        return None

    def _mark_deployed(self, model: str, spec_hash: str) -> None:
        for run in self.registry.list_runs(model=model, spec_hash=spec_hash):
            if run.details.get("deploy") == DEPLOY_PENDING:
                self.registry.update_run(run.id, details={**run.details, "deploy": DEPLOY_DONE},
                                         actor=self.actor)

    def _deploy_existing(self, m: ModelPlan) -> Outcome:
        assert m.current_version is not None and m.promote_to is not None
        version = self.registry.get_version(m.model, int(m.current_version.lstrip("v")))
        err = self._deploy(m.model, version, m.promote_to, m.recipe_path or "")
        return Outcome(m.model, m.action, "failed" if err else "deployed",
                       version=version.number, error=err)

    def _archive(self, model: str, number: int, reason: str) -> Outcome:
        try:
            self.registry.set_version_status(model, number, VersionStatus.archived,
                                             actor=self.actor, reason=f"prune: {reason}")
        except RegError as e:  # e.g. promoted since the plan was made
            return Outcome(model, Action.orphaned, "skipped", version=number, error=str(e))
        return Outcome(model, Action.orphaned, "archived", version=number)


def _failed_gates(version: VersionPublic) -> str:
    """``max_perplexity=41.2 (threshold 20.0)`` for each failed gate."""
    results = version.gate_results
    if isinstance(results, dict):  # {gate: {value, threshold, passed}}
        results = [{"gate": k, **v} for k, v in results.items() if isinstance(v, dict)]
    if not isinstance(results, list):
        return "(see `reg show`)"
    bad = [r for r in results if isinstance(r, dict) and r.get("passed") is False]
    return ", ".join(f"{r.get('gate') or r.get('name')}={r.get('value')} "
                     f"(threshold {r.get('threshold')})" for r in bad) or "(see `reg show`)"
