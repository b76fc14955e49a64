"""The registry-wide read model operators look at: :meth:`OverviewApi.overview`.

One call answers what a status page, ``reg status`` and the gateway's ``/api/status``
show about the registry: per model its stages, a bounded list of versions (the newest
``versions`` plus every version a stage points at, so a model with thousands stays
cheap), its traffic policy, its active rollout (else its last one) with the stored
analysis values, its last reconcile outcome and its recent training runs; then the tail
of the audit log.

It costs a fixed number of queries whatever the number of models and versions (one per
kind of row, none per version), all in one read session:

1. models, with each one's version count and latest number;
2. stage pointers;
3. versions: per model the ``versions`` newest (a window function) or staged ones;
4. traffic policies; 5. the newest rollout of each model; 6. the newest ``reconcile.*``
   event of each model and overall; 7. the ``runs`` newest runs of each model;
8. the newest ``events`` audit events; 9. the change marker.

The values are plain pydantic models (no table roles), written here and read by the
gateway and the CLI. Nothing in them is secret: the registry stores no tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field

from recipes.core.names import adapter_name
from registry.api.unit import UnitOfWork
from registry.tables import metadata, models_table, versions_table
from registry.traffic import default_policy

RECONCILE_PREFIX = "reconcile."

# What a version's evaluation report contributes to an overview: the numbers operators
# compare between versions (the report's dotted keys), not the samples or the device.
KEY_METRICS: tuple[str, ...] = (
    "test.loss", "test.perplexity", "test.base_loss", "validation.loss",
    "validation.perplexity", "validation.base_loss", "generation.exact_match",
    "generation.contains", "generation.rouge_l", "preference.chosen_preferred",
    "preference.reward_accuracy", "general.regression", "train.last_loss",
    "train.tokens_per_s", "eval_loss",
)


class GateSummary(BaseModel):
    """One evaluation gate of a version, as registration recorded it."""

    gate: str
    passed: bool
    value: float | None = None
    threshold: float | None = None


class VersionOverview(BaseModel):
    """One version: identity, lineage, provenance and its key evaluation numbers."""

    number: int
    adapter_name: str  # the engine's name for it, M@vN
    status: str
    stages: list[str] = Field(default_factory=list)
    parent: int | None = None  # the model's previous version (lineage)
    spec_hash: str
    artifact_digest: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    run_id: int | None = None
    creator: str = ""
    created_at: datetime
    method: str = ""
    adapter_rank: int | None = None
    objective: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)  # KEY_METRICS present
    gates_passed: bool | None = None
    gates: list[GateSummary] = Field(default_factory=list)


class TrafficOverview(BaseModel):
    """A model's traffic policy; ``default`` when none is stored (all to production)."""

    weights: dict[str, int]
    shadow: dict[str, int] = Field(default_factory=dict)  # {stage: percent}, at most one
    default: bool = False
    revision: int | None = None
    updated_at: datetime | None = None
    actor: str = ""
    reason: str = ""


class CheckOverview(BaseModel):
    """One analysis check of a rollout's current step, as the controller last stored it."""

    name: str  # error_rate, latency_p95, ttft_p95
    verdict: str  # Successful, Failed, Inconclusive
    value: float | None = None  # the canary's error rate, or its p95 ratio to the baseline
    limit: float | None = None
    canary_n: int = 0
    baseline_n: int = 0
    p_value: float | None = None  # always-valid p-value of the failure test
    confidence: float | None = None  # 1 - p_value: how sure the canary is worse
    detail: str = ""


class RolloutOverview(BaseModel):
    """A model's active rollout, else its last one."""

    id: int
    candidate: int
    baseline: int | None
    phase: str
    active: bool
    step: int  # index into steps; -1 before the first
    steps: list[int] = Field(default_factory=list)  # each step's canary weight
    weight: int  # the canary's traffic percentage now
    failures: int = 0
    failure_limit: int | None = None  # failed steps that roll it back
    interval_s: float | None = None  # a step's analysis deadline, when the plan says
    origin: str = ""
    actor: str = ""
    reason: str = ""  # the last decision's reason
    analysis: list[CheckOverview] = Field(default_factory=list)
    plan: dict[str, Any] = Field(default_factory=dict)
    started_at: datetime
    step_started_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None


class EventOverview(BaseModel):
    """An audit event, without its data blob (``reg events --json`` has it)."""

    id: int
    at: datetime
    kind: str
    actor: str = ""
    model: str | None = None
    version: int | None = None
    stage: str | None = None
    run_id: int | None = None
    message: str = ""


class RunOverview(BaseModel):
    """A training run (no log tail or workdir: `reg runs` shows those)."""

    id: int
    status: str
    phase: str = ""
    spec_hash: str
    attempts: int = 0
    version: int | None = None
    error: str = ""
    git_commit: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ModelOverview(BaseModel):
    name: str
    description: str = ""
    owner: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    versions_total: int = 0
    latest: int | None = None
    stages: dict[str, int | None] = Field(default_factory=dict)  # stage -> version
    # The newest versions and every staged one, newest first; versions_total says how many
    # there are in all.
    versions: list[VersionOverview] = Field(default_factory=list)
    traffic: TrafficOverview
    rollout: RolloutOverview | None = None
    last_reconcile: EventOverview | None = None
    runs: list[RunOverview] = Field(default_factory=list)  # newest first


class Overview(BaseModel):
    """Everything an operator's view shows of the registry, read at ``generated_at``."""

    generated_at: datetime
    marker: int = 0  # the registry's change marker (newest event id) when read
    models: list[ModelOverview] = Field(default_factory=list)
    last_reconcile: EventOverview | None = None  # the newest reconcile.* event of any model
    events: list[EventOverview] = Field(default_factory=list)  # the audit tail, oldest first
    limits: dict[str, int] = Field(default_factory=dict)  # versions, runs, events asked for


# ---- pure: rows to values -------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


_KEY_PATHS = tuple((key, tuple(key.split("."))) for key in KEY_METRICS)


def key_metrics(report: Mapping[str, Any] | None) -> dict[str, float]:
    """The :data:`KEY_METRICS` a stored evaluation report holds, by dotted key."""
    out: dict[str, float] = {}
    for key, path in _KEY_PATHS:
        node: Any = report or {}
        for part in path:
            # dict, not Mapping: decoded JSON is dicts, and an ABC check costs 10x more
            node = node.get(part) if isinstance(node, dict) else None
        value = _number(node)
        if value is not None:
            out[key] = value
    return out


def gate_summaries(stored: Any) -> list[GateSummary]:
    """Gates as registration stored them (a list of dicts; older ones a dict by name)."""
    if isinstance(stored, Mapping):
        stored = [{"gate": k, **(g if isinstance(g, Mapping) else {"value": g})}
                  for k, g in stored.items()]
    if not isinstance(stored, list):
        return []
    return [GateSummary(gate=str(g.get("gate", "")), passed=bool(g.get("passed")),
                        value=_number(g.get("value")), threshold=_number(g.get("threshold")))
            for g in stored if isinstance(g, Mapping)]


def check_overview(stored: Mapping[str, Any]) -> CheckOverview:
    """One stored analysis check (``rollout.canary.analysis.CheckResult`` as JSON)."""
    p = _number(stored.get("p_value"))
    return CheckOverview(
        name=str(stored.get("name", "")), verdict=str(stored.get("verdict", "")),
        value=_number(stored.get("value")), limit=_number(stored.get("limit")),
        canary_n=int(stored.get("canary_n") or 0), baseline_n=int(stored.get("baseline_n") or 0),
        p_value=p, confidence=None if p is None else max(0.0, 1.0 - p),
        detail=str(stored.get("detail", "")))


def rollout_overview(row: sa.RowMapping) -> RolloutOverview:
    """A stored rollout row (column name -> value) as an overview."""
    from pydantic import ValidationError

    from recipes.schema import RolloutSpec

    plan: dict[str, Any] = dict(row["plan"] or {})
    try:
        spec: RolloutSpec | None = RolloutSpec.model_validate(plan)
    except ValidationError:  # a plan stored by an older reg: show what it has
        spec = None
    return RolloutOverview(
        id=row["id"], candidate=row["candidate"], baseline=row["baseline"],
        phase=row["phase"], active=bool(row["active"]), step=row["step"],
        steps=[] if spec is None else [s.weight for s in spec.steps],
        weight=row["weight"], failures=row["failures"],
        failure_limit=None if spec is None else spec.failure_limit,
        interval_s=None if spec is None else spec.interval_s, origin=row["origin"],
        actor=row["actor"], reason=row["reason"],
        analysis=[check_overview(a) for a in row["analysis"] or [] if isinstance(a, Mapping)],
        plan=plan, started_at=row["started_at"], step_started_at=row["step_started_at"],
        updated_at=row["updated_at"], ended_at=row["ended_at"])


def _event(row: sa.RowMapping) -> EventOverview:
    return EventOverview(id=row["id"], at=row["at"], kind=row["kind"], actor=row["actor"],
                         model=row["model"], version=row["version"], stage=row["stage"],
                         run_id=row["run_id"], message=row["message"])


# ---- the read ----------------------------------------------------------------------------


class OverviewApi(UnitOfWork):
    """The operators' read model of the whole registry (see the module docstring)."""

    def overview(self, model: str | None = None, *, versions: int = 20, runs: int = 5,
                 events: int = 50) -> Overview:
        """Every model (only ``model`` when given: NotFound lists the others) with its
        ``versions`` newest versions plus its staged ones, its ``runs`` newest runs, and the
        ``events`` newest audit events (of that model when given)."""
        if min(versions, runs, events) < 0:
            raise ValueError(f"limits must be 0 or more (versions={versions}, runs={runs}, "
                             f"events={events})")
        if model is not None:
            model = self.resolve_model(model)
        with self.engine.connect() as conn:  # Core statements, as version_summaries
            out = self._overview(conn, model, versions, runs, events)
            conn.rollback()
        return out

    def _overview(self, conn: sa.Connection, only: str | None, n_versions: int, n_runs: int,
                  n_events: int) -> Overview:
        mt, vt = models_table, versions_table
        st, tt = metadata.tables["stages"], metadata.tables["traffic_policies"]
        rt, et, runs_t = (metadata.tables["rollouts"], metadata.tables["events"],
                          metadata.tables["runs"])
        generated = self.clock()

        # 1. models with their counts
        counts = sa.select(vt.c.model_id, sa.func.count().label("n"),
                           sa.func.max(vt.c.number).label("latest")).group_by(
            vt.c.model_id).subquery()
        stmt = sa.select(mt.c.id, mt.c.name, mt.c.description, mt.c.owner, mt.c.labels,
                         counts.c.n, counts.c.latest).join(
            counts, counts.c.model_id == mt.c.id, isouter=True).order_by(mt.c.name)
        if only is not None:
            stmt = stmt.where(mt.c.name == only)
        model_rows = conn.execute(stmt).mappings().all()
        ids = [r["id"] for r in model_rows]
        names = {r["id"]: r["name"] for r in model_rows}

        # 2. stage pointers (with the version number each points at)
        stages: dict[int, dict[str, int | None]] = {i: {} for i in ids}
        staged: dict[int, list[str]] = {}  # version id -> stage names
        for mid, stage, vid, number in conn.execute(
                sa.select(st.c.model_id, st.c.name, st.c.version_id, vt.c.number)
                .join(vt, st.c.version_id == vt.c.id, isouter=True)
                .where(st.c.model_id.in_(ids)).order_by(st.c.name)):
            stages[mid][stage] = number
            if vid is not None:
                staged.setdefault(vid, []).append(stage)

        # 3. versions: the newest n per model, or staged
        rank = sa.func.row_number().over(partition_by=vt.c.model_id,
                                         order_by=vt.c.number.desc()).label("rn")
        cols = [vt.c.id, vt.c.model_id, vt.c.number, vt.c.status, vt.c.parent_number,
                vt.c.spec_hash, vt.c.artifact_digest, vt.c.git_commit, vt.c.git_dirty,
                vt.c.run_id, vt.c.creator, vt.c.created_at, vt.c.method, vt.c.adapter_rank,
                vt.c.objective, vt.c.metrics, vt.c.gates_passed, vt.c.gate_results]
        # Ranked over the narrow (model_id, number) index; the wide columns (metrics JSON)
        # are read only for the rows kept.
        ranked = sa.select(vt.c.id, rank).where(vt.c.model_id.in_(ids)).subquery()
        keep = ranked.c.rn <= n_versions
        if staged:
            keep = sa.or_(keep, ranked.c.id.in_(list(staged)))
        kept = sa.select(ranked.c.id).where(keep)
        versions: dict[int, list[VersionOverview]] = {i: [] for i in ids}
        for r in conn.execute(sa.select(*cols).where(vt.c.id.in_(kept)).order_by(
                vt.c.model_id, vt.c.number.desc())).mappings():
            versions[r["model_id"]].append(VersionOverview(
                number=r["number"], adapter_name=adapter_name(names[r["model_id"]], r["number"]),
                status=str(r["status"]), stages=staged.get(r["id"], []),
                parent=r["parent_number"], spec_hash=r["spec_hash"],
                artifact_digest=r["artifact_digest"], git_commit=r["git_commit"],
                git_dirty=r["git_dirty"], run_id=r["run_id"], creator=r["creator"],
                created_at=r["created_at"], method=r["method"],
                adapter_rank=r["adapter_rank"], objective=r["objective"],
                metrics=key_metrics(r["metrics"]), gates_passed=r["gates_passed"],
                gates=gate_summaries(r["gate_results"])))

        # 4. traffic policies
        traffic: dict[int, TrafficOverview] = {}
        for r in conn.execute(sa.select(tt).where(tt.c.model_id.in_(ids))).mappings():
            traffic[r["model_id"]] = TrafficOverview(
                weights=dict(r["weights"]), shadow=dict(r["shadow"] or {}),
                revision=r["revision"], updated_at=r["updated_at"], actor=r["actor"],
                reason=r["reason"])

        # 5. each model's newest rollout (an active one is always its newest)
        newest = sa.select(sa.func.max(rt.c.id)).where(rt.c.model_id.in_(ids)).group_by(
            rt.c.model_id)
        rollouts = {r["model_id"]: rollout_overview(r) for r in conn.execute(
            sa.select(rt).where(rt.c.id.in_(newest.scalar_subquery()))).mappings()}

        # 6. the newest reconcile event of each model, and of any
        is_reconcile = et.c.kind.startswith(RECONCILE_PREFIX, autoescape=True)
        per_model = sa.select(sa.func.max(et.c.id)).where(is_reconcile).group_by(et.c.model)
        reconcile_rows = [_event(r) for r in conn.execute(sa.select(et).where(
            et.c.id.in_(per_model.scalar_subquery())).order_by(et.c.id)).mappings()]
        reconciles = {e.model: e for e in reconcile_rows if e.model is not None}
        last_reconcile = reconcile_rows[-1] if reconcile_rows else None
        if only is not None:
            last_reconcile = reconciles.get(only)

        # 7. the newest runs of each model
        run_rank = sa.func.row_number().over(partition_by=runs_t.c.model,
                                             order_by=runs_t.c.id.desc()).label("rn")
        run_cols = [runs_t.c.id, runs_t.c.model, runs_t.c.status, runs_t.c.phase,
                    runs_t.c.spec_hash, runs_t.c.attempts, runs_t.c.version_number,
                    runs_t.c.error, runs_t.c.git_commit, runs_t.c.created_at,
                    runs_t.c.started_at, runs_t.c.finished_at]
        ranked_runs = sa.select(*run_cols, run_rank).where(
            runs_t.c.model.in_(list(names.values()))).subquery()
        runs: dict[str, list[RunOverview]] = {}
        for r in conn.execute(sa.select(ranked_runs).where(ranked_runs.c.rn <= n_runs)
                              .order_by(ranked_runs.c.id.desc())).mappings():
            runs.setdefault(r["model"], []).append(RunOverview(
                id=r["id"], status=str(r["status"]), phase=r["phase"],
                spec_hash=r["spec_hash"], attempts=int(r["attempts"] or 0),
                version=r["version_number"], error=r["error"], git_commit=r["git_commit"],
                created_at=r["created_at"], started_at=r["started_at"],
                finished_at=r["finished_at"]))

        # 8. the audit tail (of the model when one is named); 9. the change marker
        tail = sa.select(et.c.id, et.c.at, et.c.kind, et.c.actor, et.c.model, et.c.version,
                         et.c.stage, et.c.run_id, et.c.message)
        if only is not None:
            tail = tail.where(et.c.model == only)
        tail_rows = [_event(r) for r in conn.execute(
            tail.order_by(et.c.id.desc()).limit(n_events)).mappings()]
        tail_rows.reverse()
        marker = conn.execute(sa.select(sa.func.max(et.c.id))).scalar()

        models = [ModelOverview(
            name=r["name"], description=r["description"], owner=r["owner"],
            labels=dict(r["labels"] or {}), versions_total=int(r["n"] or 0),
            latest=r["latest"], stages=stages[r["id"]], versions=versions[r["id"]],
            traffic=traffic.get(r["id"]) or _default_traffic(r["name"]),
            rollout=rollouts.get(r["id"]), last_reconcile=reconciles.get(r["name"]),
            runs=runs.get(r["name"], [])) for r in model_rows]
        return Overview(generated_at=generated, marker=int(marker or 0), models=models,
                        last_reconcile=last_reconcile, events=tail_rows,
                        limits={"versions": n_versions, "runs": n_runs, "events": n_events})


def _default_traffic(model: str) -> TrafficOverview:
    return TrafficOverview(weights=dict(default_policy(model).weights), default=True)


__all__: Sequence[str] = (
    "CheckOverview", "EventOverview", "GateSummary", "ModelOverview", "Overview",
    "OverviewApi", "RolloutOverview", "RunOverview", "TrafficOverview", "VersionOverview",
)
