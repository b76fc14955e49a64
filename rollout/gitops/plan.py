"""The reconciler's decision: desired state (recipes) vs actual state (registry) -> a Plan.

Everything here is pure: no database, no filesystem, no clock (``now`` is an
argument). The doer (:mod:`rollout.gitops.reconciler`) gathers both states, calls
:func:`make_plan`, and carries out the actions one model at a time; ``reg
plan`` renders the same Plan. Keeping the decision in one function means the
plan a user reads is exactly what a reconcile would do.

Per model, exactly one :class:`Action`:

========== ===========================================================
in_sync    a ready (or gate-rejected) version with this spec hash exists
train      a new spec hash, or an interrupted run of it to resume
retry      the newest run for this hash failed; retried with backoff
deploy     the version is registered but its deploy actions have not run
blocked    the recipe is invalid, or retries are exhausted
orphaned   the registry has the model but no recipe names it any more
========== ===========================================================

A ready version's deploy actions are :func:`rollout.gitops.deploy_rules.deploy_steps`'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from recipes.core.names import PRODUCTION
from rollout.gitops.deploy_rules import (
    ROLLOUT_NOT_RESTARTED,
    DeployKind,
    deploy_steps,
    describe_deploy,
)
from rollout.gitops.state import (
    RUN_ACTIVE,
    RUN_DONE,
    RUN_FAILED,
    VERSION_SETTLED,
    BlockedRecipe,
    DesiredModel,
    GitInfo,
    ProblemInfo,
    RunSnapshot,
    VersionSnapshot,
)


class Action(StrEnum):
    """What the reconciler does for one model."""

    in_sync = "in_sync"  # nothing to do
    train = "train"  # create (or resume) a run and train the desired spec hash
    retry = "retry"  # the last run for this hash failed; try again when due
    deploy = "deploy"  # registered and ready, but its deploy actions have not been applied
    blocked = "blocked"  # invalid recipe, or the retry limit is reached; needs a person
    orphaned = "orphaned"  # registered, but no recipe any more; archived only with --prune


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff for failed training runs of one spec hash.

    The n-th failure (n >= 1) waits ``base_s * factor**(n-1)`` seconds, capped
    at ``max_delay_s``; after ``max_attempts`` failures the model is blocked
    until its spec hash changes (a new hash starts with a clean slate).
    """

    base_s: float = 60.0
    factor: float = 2.0
    max_delay_s: float = 3600.0
    max_attempts: int = 5

    def delay(self, failures: int) -> timedelta:
        if failures <= 0:
            return timedelta(0)
        # Work in log space so a large failure count cannot overflow a float.
        exp = (failures - 1) * math.log(self.factor) if self.factor > 0 else 0.0
        raw = self.base_s * math.exp(min(exp, 700.0))
        return timedelta(seconds=min(raw, self.max_delay_s))

    def next_retry_at(self, failures: int, last_failure_at: datetime) -> datetime:
        return last_failure_at + self.delay(failures)

    def exhausted(self, failures: int) -> bool:
        return failures >= self.max_attempts


@dataclass(frozen=True)
class FieldChange:
    """One recipe field that differs; ``None`` on a side means absent there."""

    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class SpecDiff:
    """What changed between the newest version and the desired spec."""

    against: str | None  # "v3", or None when there is no version yet
    fields: tuple[FieldChange, ...] = ()
    data_changed: tuple[str, ...] = ()
    data_added: tuple[str, ...] = ()
    data_removed: tuple[str, ...] = ()
    base_model_changed: bool = False

    @property
    def empty(self) -> bool:
        return not (self.fields or self.data_changed or self.data_added or self.data_removed
                    or self.base_model_changed)


@dataclass(frozen=True)
class ModelPlan:
    """The decision for one model, with everything `reg plan` shows about it."""

    model: str
    action: Action
    reason: str
    recipe_path: str | None = None
    spec_hash: str | None = None
    current_version: str | None = None  # the version matching the spec hash (in_sync)
    newest_version: str | None = None
    diff: SpecDiff | None = None
    run_key: str | None = None  # stable name of the attempt; its workdir is runs/<run_key>
    run_id: str | None = None  # the registry's id of the run to resume (resume only)
    resume: bool = False  # train: continue an interrupted run in its workdir
    attempt: int = 1  # train / retry: which attempt this would be
    failures: int = 0
    next_retry_at: datetime | None = None
    due: bool = True  # retry: whether the backoff has elapsed at ``now``
    last_error: str | None = None
    promote_to: str | None = None
    deploy: str | None = None  # the deploy actions a new ready version gets, as people read them
    git: GitInfo | None = None
    problems: tuple[ProblemInfo, ...] = ()

    @property
    def pending(self) -> bool:
        """A change a reconcile would make (now or after a backoff)."""
        return self.action in (Action.train, Action.retry, Action.deploy)

    @property
    def actionable(self) -> bool:
        """A change a reconcile pass at ``now`` would start."""
        return self.action in (Action.train, Action.deploy) or (
            self.action is Action.retry and self.due)


@dataclass(frozen=True)
class PruneDecision:
    """A version `--prune` archives: of an orphaned model, not in any stage."""

    model: str
    version: str
    reason: str


@dataclass(frozen=True)
class StaleRun:
    """An unfinished run the reconciler closes before anything else.

    ``version`` set: its version was registered but the run was not marked
    finished (a kill in between): finish it with that version. Otherwise its
    spec hash is no longer wanted: cancel it.
    """

    run_id: str
    model: str
    spec_hash: str
    reason: str
    version: int | None = None
    version_status: str | None = None


@dataclass(frozen=True)
class Plan:
    models: tuple[ModelPlan, ...]
    prune: tuple[PruneDecision, ...] = ()
    prune_withheld: str | None = None  # why --prune decided nothing, when it was asked
    stale_runs: tuple[StaleRun, ...] = ()

    @property
    def exit_code(self) -> int:
        """terraform plan -detailed-exitcode: 0 in sync, 2 changes pending, 1 error."""
        if any(m.action is Action.blocked for m in self.models):
            return 1
        if any(m.pending for m in self.models) or self.prune:
            return 2
        return 0

    def by_action(self, action: Action) -> list[ModelPlan]:
        return [m for m in self.models if m.action is action]

    def get(self, model: str) -> ModelPlan | None:
        return next((m for m in self.models if m.model == model), None)

    def as_json(self) -> dict[str, Any]:
        counts = {a.value: len(self.by_action(a)) for a in Action}
        return {
            "exit_code": self.exit_code,
            "summary": counts,
            "models": [_model_json(m) for m in self.models],
            "prune": [{"model": p.model, "version": p.version, "reason": p.reason}
                      for p in self.prune],
            "prune_withheld": self.prune_withheld,
            "stale_runs": [{"run_id": r.run_id, "model": r.model, "reason": r.reason,
                            "version": r.version} for r in self.stale_runs],
        }


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _model_json(m: ModelPlan) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": m.model,
        "action": m.action.value,
        "reason": m.reason,
        "recipe_path": m.recipe_path,
        "spec_hash": m.spec_hash,
        "current_version": m.current_version,
        "newest_version": m.newest_version,
        "run_key": m.run_key,
        "run_id": m.run_id,
        "resume": m.resume,
        "attempt": m.attempt,
        "failures": m.failures,
        "next_retry_at": _iso(m.next_retry_at),
        "due": m.due,
        "last_error": m.last_error,
        "promote_to": m.promote_to,
        "deploy": m.deploy,
        "git": None if m.git is None else {
            "commit": m.git.commit, "dirty": m.git.dirty, "repo_root": m.git.repo_root},
        "problems": [p.rendered for p in m.problems],
        "diff": None,
    }
    if m.diff is not None:
        d = m.diff
        out["diff"] = {
            "against": d.against,
            "fields": [{"path": c.path, "old": c.old, "new": c.new} for c in d.fields],
            "data_changed": list(d.data_changed),
            "data_added": list(d.data_added),
            "data_removed": list(d.data_removed),
            "base_model_changed": d.base_model_changed,
        }
    return out


def run_key_for(model: str, spec_hash: str, attempt: int) -> str:
    """The name of one attempt at one spec hash: stable, so a killed pass resumes its workdir.

    Safe as a directory name: model names are ``[a-z0-9-]`` and the hash part is hex.
    """
    digest = spec_hash.split(":", 1)[-1][:12]
    return f"{model}-{digest}-{attempt}"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaf values; lists are leaves (a changed list shows whole)."""
    if isinstance(obj, Mapping) and obj:
        out: dict[str, Any] = {}
        for k in sorted(obj, key=str):
            out.update(flatten(obj[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def diff_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    fo, fn = flatten(old), flatten(new)
    return tuple(
        FieldChange(path, fo.get(path), fn.get(path))
        for path in sorted(set(fo) | set(fn))
        if fo.get(path, _MISSING) != fn.get(path, _MISSING)
    )


_MISSING = object()


def spec_diff(desired: DesiredModel, newest: VersionSnapshot | None) -> SpecDiff:
    if newest is None:
        return SpecDiff(against=None)
    fields = (diff_fields(newest.normalized_spec, desired.normalized_spec)
              if newest.normalized_spec is not None else ())
    old_d, new_d = newest.data_digests, desired.data_digests
    return SpecDiff(
        against=newest.label,
        fields=fields,
        data_changed=tuple(sorted(k for k in new_d if k in old_d and old_d[k] != new_d[k])),
        data_added=tuple(sorted(k for k in new_d if k not in old_d)),
        data_removed=tuple(sorted(k for k in old_d if k not in new_d)),
        base_model_changed=bool(newest.base_model) and dict(newest.base_model) != dict(
            desired.base_model),
    )


def _plan_desired(
    d: DesiredModel,
    versions: Sequence[VersionSnapshot],
    runs: Sequence[RunSnapshot],
    now: datetime,
    policy: BackoffPolicy,
) -> ModelPlan:
    newest = max(versions, key=lambda v: v.version, default=None)
    production = next((v.version for v in versions if PRODUCTION in v.stages), None)
    common: dict[str, Any] = {
        "model": d.name, "recipe_path": d.recipe_path, "spec_hash": d.spec_hash,
        "newest_version": newest.label if newest else None, "promote_to": d.promote_to,
        "git": d.git,
    }
    match = [v for v in versions if v.spec_hash == d.spec_hash and v.status in VERSION_SETTLED]
    if match:
        v = max(match, key=lambda v: v.version)
        note = {"ready": "", "rejected": " (rejected by its gates; change the recipe to retrain)",
                "archived": " (archived)"}.get(v.status, "")
        steps = deploy_steps(d.promote_to, d.rolls_out, v.version, production)
        if v.status == "ready" and not v.deploy_done and steps:
            if v.rollout_ended in ROLLOUT_NOT_RESTARTED and any(
                    s.kind is DeployKind.rollout for s in steps):
                return ModelPlan(
                    action=Action.in_sync, current_version=v.label,
                    reason=f"{v.label} has this spec hash; its rollout was {v.rollout_ended}"
                    ", so it is not started again (a recipe change trains a new version; "
                    f"`reg rollout start {d.name} {v.label}` retries it)", **common)
            deploy = describe_deploy(steps, v.version, production)
            return ModelPlan(action=Action.deploy, current_version=v.label, deploy=deploy,
                             reason=f"{deploy} (deploy in the recipe)", **common)
        return ModelPlan(action=Action.in_sync, current_version=v.label,
                         reason=f"{v.label} has this spec hash{note}", **common)
    # A new version takes the next number: what its deploy actions will be if it is ready.
    number = newest.version + 1 if newest else 1
    common["deploy"] = describe_deploy(
        deploy_steps(d.promote_to, d.rolls_out, number, production), number, production)

    mine = sorted((r for r in runs if r.spec_hash == d.spec_hash),
                  key=lambda r: (r.attempt, r.created_at))
    failures = [r for r in mine if r.status in RUN_FAILED]
    diff = spec_diff(d, newest)
    last = mine[-1] if mine else None
    if last is not None and last.status in RUN_ACTIVE:
        return ModelPlan(action=Action.train, diff=diff, run_id=last.run_id, resume=True,
                         run_key=run_key_for(d.name, d.spec_hash, last.attempt),
                         attempt=last.attempt, failures=len(failures),
                         reason=f"resume interrupted run {last.run_id} ({last.status})",
                         **common)
    if last is not None and last.status in RUN_DONE:
        # The run finished but its version is gone (the reconciler finishes a run
        # only after registering, so someone removed it): a finished run is never
        # reopened, so train again as a new attempt.
        nxt = last.attempt + 1
        return ModelPlan(action=Action.train, diff=diff,
                         run_key=run_key_for(d.name, d.spec_hash, nxt), attempt=nxt,
                         failures=len(failures),
                         reason=f"run {last.run_id} finished but no version is registered",
                         **common)
    if failures and last is not None and last.status in RUN_FAILED:
        n = len(failures)
        failed_at = last.finished_at or last.created_at
        if policy.exhausted(n):
            return ModelPlan(
                action=Action.blocked, diff=diff, failures=n, attempt=last.attempt,
                last_error=last.error,
                reason=f"training failed {n} time(s) (limit {policy.max_attempts}); "
                "fix the recipe or data (a new spec hash starts again) or raise "
                "REG_RETRY_MAX_ATTEMPTS", **common)
        at = policy.next_retry_at(n, failed_at)
        due = at <= now
        nxt = last.attempt + 1
        return ModelPlan(
            action=Action.retry, diff=diff, failures=n, attempt=nxt,
            run_key=run_key_for(d.name, d.spec_hash, nxt), next_retry_at=at, due=due,
            last_error=last.error,
            reason=f"attempt {nxt} of {policy.max_attempts} "
            + ("now" if due else f"at {at.isoformat(timespec='seconds')}"), **common)
    reason = "new model" if newest is None else f"spec changed since {newest.label}"
    if common["deploy"]:
        reason += f"; then {common['deploy']}"
    return ModelPlan(action=Action.train, diff=diff, run_key=run_key_for(d.name, d.spec_hash, 1),
                     attempt=1, reason=reason, **common)


def make_plan(
    desired: Iterable[DesiredModel],
    blocked: Iterable[BlockedRecipe],
    versions: Iterable[VersionSnapshot],
    runs: Iterable[RunSnapshot],
    *,
    now: datetime,
    policy: BackoffPolicy | None = None,
    prune: bool = False,
) -> Plan:
    """Decide one action per model. Pure: same inputs, same plan."""
    policy = policy or BackoffPolicy()
    desired = list(desired)
    blocked = list(blocked)
    by_model_v: dict[str, list[VersionSnapshot]] = {}
    for v in versions:
        by_model_v.setdefault(v.model, []).append(v)
    by_model_r: dict[str, list[RunSnapshot]] = {}
    for r in runs:
        by_model_r.setdefault(r.model, []).append(r)

    plans: list[ModelPlan] = [
        _plan_desired(d, by_model_v.get(d.name, []), by_model_r.get(d.name, []), now, policy)
        for d in desired
    ]
    named = {d.name for d in desired}
    for b in blocked:
        if b.name is not None and b.name in named:
            continue  # a duplicate-name file: the model itself is planned from its first recipe
        newest = max(by_model_v.get(b.name or "", []), key=lambda v: v.version, default=None)
        first = b.problems[0].message if b.problems else "invalid recipe"
        plans.append(ModelPlan(
            model=b.name or f"<{b.file}>", action=Action.blocked, recipe_path=b.file,
            newest_version=newest.label if newest else None,
            reason=f"invalid recipe: {first}" + (
                f" (+{len(b.problems) - 1} more)" if len(b.problems) > 1 else ""),
            problems=tuple(b.problems)))
        if b.name is not None:
            named.add(b.name)

    orphans = sorted(set(by_model_v) - named)
    for name in orphans:
        vs = by_model_v[name]
        newest = max(vs, key=lambda v: v.version)
        plans.append(ModelPlan(model=name, action=Action.orphaned, newest_version=newest.label,
                               reason="no recipe names this model; `--prune` archives its "
                               "versions that are in no stage"))

    decisions: list[PruneDecision] = []
    withheld: str | None = None
    if prune and orphans:
        unnamed = [b.file for b in blocked if b.name is None]
        if unnamed:
            # A recipe we cannot read might be the one naming an "orphan": archiving
            # it would undo a model the user still wants. Refuse until it parses.
            withheld = ("not pruning: these recipe files cannot be read, and one may name an "
                        f"orphaned model: {', '.join(sorted(unnamed))}")
        else:
            for name in orphans:
                for v in sorted(by_model_v[name], key=lambda v: v.version):
                    if v.status != "archived" and not v.stages:
                        decisions.append(PruneDecision(name, v.label, "orphaned, in no stage"))
    wanted = {d.name: d.spec_hash for d in desired}
    blocked_names = {b.name for b in blocked if b.name is not None}
    settled = {(v.model, v.spec_hash): v for v in sorted(
        (v for vs in by_model_v.values() for v in vs if v.status in VERSION_SETTLED),
        key=lambda v: v.version)}
    stale: list[StaleRun] = []
    for model, rs in sorted(by_model_r.items()):
        for r in sorted(rs, key=lambda r: (r.created_at, r.run_id)):
            if r.status not in RUN_ACTIVE:
                continue
            done = settled.get((model, r.spec_hash))
            if done is not None:
                stale.append(StaleRun(r.run_id, model, r.spec_hash,
                                      f"{done.label} is registered; the run was not marked done",
                                      version=done.version, version_status=done.status))
                continue
            if model in blocked_names:
                continue  # its recipe may come back unchanged once fixed: keep it resumable
            if wanted.get(model) != r.spec_hash:
                why = ("its recipe is gone" if model not in wanted
                       else "the recipe changed since it started")
                stale.append(StaleRun(r.run_id, model, r.spec_hash, why))
    plans.sort(key=lambda m: m.model)
    return Plan(models=tuple(plans), prune=tuple(decisions), prune_withheld=withheld,
                stale_runs=tuple(stale))
