"""The registry's public API: one facade that the CLI, the reconciler and serving call.

``Registry.open()`` reads :class:`~registry.settings.Settings` from the
environment, opens the database (migrating it on first use) and returns a
facade. Decisions come from pure modules (``versions``, ``stages``,
``traffic``); this module loads state, calls them and writes the outcome and
its audit event in one transaction. Writers of one model serialise: SQLite
write transactions begin IMMEDIATE; PostgreSQL locks the model's row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from reg_cli.startup import gc_paused
from registry import events as audit
from registry import runs as runs_mod
from registry.db import ensure_schema, is_sqlite, open_engine, writer
from registry.errors import Ambiguous, NotFound, Refused
from registry.events import EventKind
from registry.settings import Settings, default_actor
from registry.stages import (
    Decision,
    StageAction,
    StageChange,
    check_stage_name,
    decide_clear,
    decide_promote,
    decide_rollback,
    pointers_at,
    stage_stack,
)
from registry.tables import (
    Artifact,
    EventPublic,
    Model,
    ModelPublic,
    Run,
    RunPublic,
    RunUpdate,
    Stage,
    StageEvent,
    StageEventPublic,
    TrafficPolicy,
    TrafficPolicyPublic,
    Version,
    VersionPublic,
    models_table,
    versions_table,
)
from registry.traffic import put_policy, validate_policy, weight_of
from registry.versions import (
    INITIAL_STATUSES,
    VersionRef,
    VersionStatus,
    adapter_name,
    check_model_name,
    check_status_transition,
    parse_version_ref,
)

Clock = Callable[[], datetime]

if TYPE_CHECKING:  # keeps fsspec and the lease code off the import path
    from registry.lease import Leases
    from registry.store import ArtifactStore


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RegisterOutcome:
    version: VersionPublic
    created: bool  # False when the spec hash was already registered (idempotent)


@dataclass(frozen=True)
class StageResult:
    """What a promote / rollback / clear did."""

    model: str
    stage: str
    action: StageAction
    from_version: int | None
    to_version: int | None
    changed: bool
    forced: bool = False
    event_id: int | None = None


@dataclass(frozen=True)
class Deployment:
    """A version that some stage points at: what the serving engine must load."""

    model: str
    version: int
    adapter_name: str
    stages: list[str]
    status: str
    artifact_digest: str
    manifest: dict[str, Any]
    base_model_path: str
    base_model: dict[str, str]
    adapter_rank: int | None
    method: str
    identity: dict[str, Any] = field(default_factory=dict)


_STATUSES = {s.value: s for s in VersionStatus}


def _versions_from_rows(
    keys: list[str], rows: Iterable[Sequence[Any]], stages: dict[int, list[str]]
) -> list[VersionPublic]:
    """Public versions from rows of our own typed columns, ``keys`` naming each value.

    Validating them again, or ``model_construct`` (which walks every field's aliases), costs
    ~10 us a row, half of a 10,000-version listing; a copy of the first with every field
    replaced costs a third of that and gives the same objects.
    """
    fields = {*keys, "stages"}
    if fields != set(VersionPublic.model_fields):  # a copy must replace every field
        raise TypeError(f"version rows lack {set(VersionPublic.model_fields) - fields}")
    out: list[VersionPublic] = []
    for row in rows:
        values = dict(zip(keys, row, strict=True))
        values["status"] = _STATUSES[values["status"]]
        values["stages"] = stages.get(values["id"], [])
        out.append(out[0].model_copy(update=values) if out
                   else VersionPublic.model_construct(**values))
    return out


def _format_numbers(numbers: Sequence[int]) -> str:
    if not numbers:
        return "none"
    shown = [f"v{n}" for n in numbers[-12:]]
    return ("..., " if len(numbers) > 12 else "") + ", ".join(shown)


class Registry:
    """Facade over the registry database and artifact store."""

    def __init__(self, settings: Settings, *, clock: Clock = utcnow, migrate: bool = True) -> None:
        self.settings = settings
        self.clock = clock
        self.engine = open_engine(settings.database_url)
        self._writer = writer(self.engine)
        self._store: ArtifactStore | None = None
        self._leases: Leases | None = None
        if migrate:
            ensure_schema(self.engine)

    @classmethod
    def open(cls, settings: Settings | None = None, *, clock: Clock | None = None) -> Registry:
        return cls(settings or Settings.from_env(), clock=clock or utcnow)

    def close(self) -> None:
        if self._leases is not None:
            self._leases.close()
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            from registry.store import ArtifactStore

            self._store = ArtifactStore(self.settings.artifact_store)
        return self._store

    @property
    def leases(self) -> Leases:
        if self._leases is None:
            from registry.lease import Leases

            self._leases = Leases(self.engine, self.clock)
        return self._leases

    # -- sessions -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        with Session(self._writer, expire_on_commit=False) as s, s.begin():
            yield s

    def _lock_model(self, s: Session, name: str, *, create: bool = False,
                    actor: str | None = None) -> Model:
        """The model's row, locked for this transaction (PostgreSQL FOR UPDATE)."""
        stmt = select(Model).where(col(Model.name) == name)
        if not is_sqlite(self.engine):
            stmt = stmt.with_for_update()
        row = s.exec(stmt).first()
        if row is not None:
            return row
        if not create:
            raise self._unknown_model(s, name)
        if is_sqlite(self.engine):  # the IMMEDIATE transaction already excludes other writers
            row = Model(name=name, created_at=self.clock())
            s.add(row)
            s.flush()
        else:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            inserted = s.execute(pg_insert(models_table).values(
                name=name, description="", created_at=self.clock()
            ).on_conflict_do_nothing().returning(models_table.c.id)).first() is not None
            row = s.exec(select(Model).where(col(Model.name) == name).with_for_update()).one()
            if not inserted:  # a concurrent registration created it first
                return row
        audit.record(s, kind=EventKind.model_created, at=self.clock(),
                     actor=actor or default_actor(), model=name, message=f"model {name} created")
        return row

    def _unknown_model(self, s: Session, name: str) -> NotFound:
        names = list(s.exec(select(Model.name).order_by(col(Model.name))))
        return NotFound(
            f"no model named {name!r} (models: {', '.join(names) or 'none'})",
            hint="`reg models` lists them" if names else "register a version first "
            "(`reg register ARTIFACT_DIR` or `reg reconcile`)",
        )

    # -- models and versions -------------------------------------------------------------------

    def resolve_model(self, model: str | None) -> str:
        """The model a command means: the one named, else the only one in the registry."""
        with self._read() as s:
            if model is not None:
                check_model_name(model)
                if s.exec(select(Model.id).where(col(Model.name) == model)).first() is None:
                    raise self._unknown_model(s, model)
                return model
            names = list(s.exec(select(Model.name).order_by(col(Model.name)).limit(51)))
        if not names:
            raise NotFound("the registry has no models yet",
                           hint="register one with `reg register ARTIFACT_DIR` or `reg reconcile`")
        if len(names) > 1:
            raise Ambiguous(
                f"which model? the registry has {len(names)}: {', '.join(names[:50])}",
                hint="name it (`reg promote MODEL v2 production` or MODEL@v2), or set $REG_MODEL",
            )
        return names[0]

    def resolve(self, model: str | None, ref: str | int | VersionRef) -> VersionPublic:
        """A version from ``v2``, ``2``, ``model@v2`` (or an int), naming the model if omitted."""
        if isinstance(ref, int):
            parsed = VersionRef(None, ref)
        elif isinstance(ref, VersionRef):
            parsed = ref
        else:
            parsed = parse_version_ref(ref)
        if parsed.model and model and parsed.model != model:
            raise Ambiguous(f"{ref} names model {parsed.model}, but the command names {model}",
                            hint="name the model once")
        name = self.resolve_model(parsed.model or model)
        return self.get_version(name, parsed.number)

    def get_version(self, model: str, number: int) -> VersionPublic:
        with self._read() as s:
            m = s.exec(select(Model).where(col(Model.name) == model)).first()
            if m is None:
                raise self._unknown_model(s, model)
            v = s.exec(select(Version).where(col(Version.model_id) == m.id,
                                             col(Version.number) == number)).first()
            if v is None:
                raise self._unknown_version(s, m, number)
            return self._public(s, v, model)

    def _unknown_version(self, s: Session, m: Model, number: int) -> NotFound:
        numbers = list(s.exec(select(Version.number).where(col(Version.model_id) == m.id)
                              .order_by(col(Version.number))))
        return NotFound(f"{m.name} has no v{number} (versions: {_format_numbers(numbers)})",
                        hint=f"`reg versions {m.name}` lists them")

    def _public(self, s: Session, v: Version, model: str) -> VersionPublic:
        stages = list(s.exec(select(Stage.name).where(col(Stage.version_id) == v.id)
                             .order_by(col(Stage.name))))
        return VersionPublic.model_validate(v, from_attributes=True,
                                            update={"model": model, "stages": stages})

    def list_models(self) -> list[ModelPublic]:
        with self._read() as s:
            counts = {
                mid: (n, latest) for mid, n, latest in s.exec(
                    select(Version.model_id, sa.func.count(), sa.func.max(Version.number))
                    .group_by(col(Version.model_id))
                )
            }
            pointers: dict[int, dict[str, int | None]] = {}
            for mid, stage, number in s.exec(
                select(Stage.model_id, Stage.name, Version.number)
                .join(Version, col(Stage.version_id) == col(Version.id), isouter=True)
            ):
                pointers.setdefault(mid, {})[stage] = number
            out = []
            for m in s.exec(select(Model).order_by(col(Model.name))):
                assert m.id is not None
                n, latest = counts.get(m.id, (0, None))
                out.append(ModelPublic(id=m.id, name=m.name, description=m.description,
                                       created_at=m.created_at, versions=n, latest=latest,
                                       stages=pointers.get(m.id, {})))
            return out

    def list_versions(
        self, model: str | None = None, *, status: VersionStatus | None = None,
        limit: int | None = None,
    ) -> list[VersionPublic]:
        """Versions oldest first (all models when ``model`` is None); ``limit`` keeps the newest."""
        vt, mt = versions_table, models_table
        columns = [c for c in vt.c if c.name in VersionPublic.model_fields]
        with self._read() as s:
            stmt = sa.select(*columns, mt.c.name).join(mt, vt.c.model_id == mt.c.id)
            if model is not None:
                stmt = stmt.where(mt.c.name == model)
            if status is not None:
                stmt = stmt.where(vt.c.status == status.value)
            stmt = stmt.order_by(vt.c.id.desc())
            if limit is not None:
                stmt = stmt.limit(limit)
            by_version: dict[int, list[str]] = {}
            for vid, name in s.exec(select(Stage.version_id, Stage.name).where(
                    col(Stage.version_id).is_not(None)).order_by(col(Stage.name))):
                if vid is not None:
                    by_version.setdefault(vid, []).append(name)
            with gc_paused():
                rows = s.execute(stmt).all()
                return _versions_from_rows([c.name for c in columns] + ["model"],
                                           reversed(rows), by_version)

    def count_versions(self, model: str | None = None) -> int:
        with self._read() as s:
            stmt = select(sa.func.count()).select_from(Version)
            if model is not None:
                stmt = stmt.join(Model, col(Version.model_id) == col(Model.id)).where(
                    col(Model.name) == model)
            return int(s.exec(stmt).one())

    def get_artifact(self, digest: str) -> Artifact:
        with self._read() as s:
            a = s.get(Artifact, digest)
            if a is None:
                raise NotFound(f"artifact {digest} is not registered")
            return a

    def set_version_status(
        self, model: str, number: int, status: VersionStatus, *, actor: str | None = None,
        reason: str = "",
    ) -> VersionPublic:
        """Change a version's status per VERSION_TRANSITIONS (e.g. archive it)."""
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, model)
            v = s.exec(select(Version).where(col(Version.model_id) == m.id,
                                             col(Version.number) == number)).first()
            if v is None:
                raise NotFound(f"{model} has no v{number}", hint=f"`reg versions {model}`")
            stages = list(s.exec(select(Stage.name).where(col(Stage.version_id) == v.id)))
            old = VersionStatus(v.status)
            check_status_transition(old, status, deployed_in=stages)
            v.status = status
            v.updated_at = self.clock()
            s.add(v)
            audit.record(s, kind=EventKind.version_status, at=v.updated_at, actor=actor,
                         model=model, version=number, message=reason,
                         data={"from": old.value, "to": status.value})
            s.flush()
            return self._public(s, v, model)

    # -- registration --------------------------------------------------------------------------

    def register_artifact(self, artifact_dir: Path, **kwargs: Any) -> VersionPublic:
        """Register an artifact directory; see :meth:`register`. Returns the version."""
        return self.register(artifact_dir, **kwargs).version

    def register(
        self,
        artifact_dir: Path,
        *,
        run_id: int | None = None,
        git_commit: str | None = None,
        git_dirty: bool | None = None,
        recipe_path: str | None = None,
        creator: str | None = None,
        status_override: VersionStatus | None = None,
        description: str | None = None,
    ) -> RegisterOutcome:
        """Verify, store and record an artifact as the model's next version (idempotent).

        The same spec hash registered twice returns the existing version
        (``created=False``). The status is ``ready`` when the gates passed and
        ``rejected`` when not, unless ``status_override`` says otherwise.
        """
        from registry.register import as_int, as_str_dict, read_facts

        if status_override is not None and status_override not in INITIAL_STATUSES:
            raise Refused(f"a version cannot be created as {status_override.value}")
        facts = read_facts(artifact_dir, status_override)
        check_model_name(facts.name)
        existing = self._by_spec(facts.name, facts.spec_hash)
        if existing is not None:
            return RegisterOutcome(existing, False)
        digest, manifest, size = self.store.put_artifact(artifact_dir)
        creator = creator or default_actor()
        ident = facts.identity
        with self._write() as s:
            m = self._lock_model(s, facts.name, create=True, actor=creator)
            assert m.id is not None
            again = s.exec(select(Version).where(col(Version.model_id) == m.id,
                                                 col(Version.spec_hash) == facts.spec_hash)).first()
            if again is not None:  # registered by a concurrent caller meanwhile
                return RegisterOutcome(self._public(s, again, facts.name), False)
            if description is not None:
                m.description = description
                s.add(m)
            if s.get(Artifact, digest) is None:
                s.add(Artifact(digest=digest, manifest=manifest, size_bytes=size,
                               file_count=len(manifest["files"]), created_at=self.clock()))
            last = s.exec(select(sa.func.max(Version.number)).where(
                col(Version.model_id) == m.id)).one()
            now = self.clock()
            v = Version(
                model_id=m.id, number=int(last or 0) + 1, status=facts.status,
                spec_hash=facts.spec_hash, artifact_digest=digest, recipe_text=facts.recipe_text,
                recipe_path=recipe_path, data_digests=as_str_dict(ident.get("data_digests")),
                base_model=as_str_dict(ident.get("base_model")),
                base_model_path=str(ident.get("base_model_path") or ""),
                method=str(ident.get("method") or ""),
                adapter_rank=as_int(ident.get("adapter_rank")),
                objective=str(ident.get("objective") or ""), metrics=facts.metrics,
                gates_passed=facts.gates_passed, gate_results=facts.gate_results, run_id=run_id,
                git_commit=git_commit, git_dirty=git_dirty, creator=creator,
                parent_number=int(last) if last else None, created_at=now, updated_at=now,
            )
            s.add(v)
            s.flush()
            audit.record(s, kind=EventKind.version_registered, at=now, actor=creator,
                         model=facts.name, version=v.number, run_id=run_id,
                         message=f"registered {facts.name}@v{v.number} ({facts.status.value})",
                         data={"artifact": digest, "spec_hash": facts.spec_hash,
                               "git_commit": git_commit, "status": facts.status.value})
            return RegisterOutcome(self._public(s, v, facts.name), True)

    def _by_spec(self, model: str, spec_hash: str) -> VersionPublic | None:
        with self._read() as s:
            row = s.exec(select(Version).join(Model, col(Version.model_id) == col(Model.id))
                         .where(col(Model.name) == model, col(Version.spec_hash) == spec_hash)
                         ).first()
            return None if row is None else self._public(s, row, model)

    def find_by_spec_hash(self, model: str, spec_hash: str) -> VersionPublic | None:
        """The version registered for ``spec_hash``, if any (the reconciler's in-sync check)."""
        return self._by_spec(model, spec_hash)

    # -- stages --------------------------------------------------------------------------------

    def _stage_changes(self, s: Session, model_id: int, stage: str | None = None
                       ) -> list[StageChange]:
        stmt = select(StageEvent).where(col(StageEvent.model_id) == model_id)
        if stage is not None:
            stmt = stmt.where(col(StageEvent.stage) == stage)
        return [
            StageChange(e.stage, StageAction(e.action), e.from_version, e.to_version, e.at)
            for e in s.exec(stmt.order_by(col(StageEvent.id)))
        ]

    def _apply(self, s: Session, m: Model, d: Decision, actor: str, reason: str) -> StageResult:
        assert m.id is not None
        if not d.changed:
            return StageResult(m.name, d.stage, d.action, d.from_version, d.to_version, False)
        now = self.clock()
        version_id = None
        if d.to_version is not None:
            version_id = s.exec(select(Version.id).where(
                col(Version.model_id) == m.id, col(Version.number) == d.to_version)).one()
        ev = StageEvent(model_id=m.id, stage=d.stage, action=d.action.value,
                        from_version=d.from_version, to_version=d.to_version, actor=actor,
                        reason=reason, forced=d.forced, at=now)
        s.add(ev)
        row = s.get(Stage, (m.id, d.stage))
        if row is None:
            row = Stage(model_id=m.id, name=d.stage, version_id=version_id, updated_at=now)
        else:
            row.version_id, row.updated_at = version_id, now
        s.add(row)
        frm = "none" if d.from_version is None else f"v{d.from_version}"
        to = "none" if d.to_version is None else f"v{d.to_version}"
        audit.record(
            s, kind=f"stage.{d.action.value}", at=now, actor=actor, model=m.name,
            version=d.to_version, stage=d.stage,
            message=f"{d.stage}: {frm} -> {to}" + (f" ({reason})" if reason else ""),
            data={"from": d.from_version, "to": d.to_version, "forced": d.forced},
        )
        s.flush()
        return StageResult(m.name, d.stage, d.action, d.from_version, d.to_version, True,
                           d.forced, ev.id)

    def promote(
        self, model: str | None, version: str | int, stage: str, *, actor: str | None = None,
        reason: str = "", force: bool = False,
    ) -> StageResult:
        """Point ``stage`` at ``version``. Refuses a version that is not ready unless ``force``."""
        check_stage_name(stage)
        ref = VersionRef(None, version) if isinstance(version, int) else parse_version_ref(version)
        if ref.model and model and ref.model != model:
            raise Ambiguous(f"{version} names model {ref.model}, but the command names {model}",
                            hint="name the model once")
        name = ref.model or model or self.resolve_model(None)
        check_model_name(name)
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, name)
            status = s.exec(select(Version.status).where(
                col(Version.model_id) == m.id, col(Version.number) == ref.number)).first()
            if status is None:
                raise self._unknown_version(s, m, ref.number)
            # Promotion needs only the current pointer (the Stage row equals the last event).
            current = s.exec(select(Version.number).join(
                Stage, col(Stage.version_id) == col(Version.id)).where(
                col(Stage.model_id) == m.id, col(Stage.name) == stage)).first()
            d = decide_promote(stage, [current], ref.number, VersionStatus(status), force=force)
            return self._apply(s, m, d, actor, reason)

    def rollback(self, model: str | None, stage: str, *, actor: str | None = None,
                 reason: str = "") -> StageResult:
        """Point ``stage`` back at what it held before its last change."""
        check_stage_name(stage)
        name = self.resolve_model(model)
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, name)
            stack = stage_stack(self._stage_changes(s, m.id or 0, stage), stage)
            statuses = {
                n: VersionStatus(st) for n, st in s.exec(
                    select(Version.number, Version.status).where(col(Version.model_id) == m.id))
            }
            d = decide_rollback(stage, stack, statuses)
            return self._apply(s, m, d, actor, reason)

    def clear_stage(self, model: str | None, stage: str, *, actor: str | None = None,
                    reason: str = "") -> StageResult:
        """Point ``stage`` at no version (refused while it has traffic)."""
        check_stage_name(stage)
        name = self.resolve_model(model)
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, name)
            stack = stage_stack(self._stage_changes(s, m.id or 0, stage), stage)
            policy = s.get(TrafficPolicy, m.id)
            d = decide_clear(stage, stack, weight_of(policy, stage))
            return self._apply(s, m, d, actor, reason)

    def history(self, model: str | None = None, *, stage: str | None = None,
                at: datetime | None = None) -> list[StageEventPublic]:
        """Stage events oldest first (up to ``at`` when given)."""
        name = self.resolve_model(model)
        with self._read() as s:
            stmt = (select(StageEvent).join(Model, col(StageEvent.model_id) == col(Model.id))
                    .where(col(Model.name) == name))
            if stage is not None:
                stmt = stmt.where(col(StageEvent.stage) == stage)
            if at is not None:
                stmt = stmt.where(col(StageEvent.at) <= at)
            return [StageEventPublic.model_validate(e, from_attributes=True,
                                                    update={"model": name})
                    for e in s.exec(stmt.order_by(col(StageEvent.id)))]

    def stages_at(self, model: str | None, when: datetime) -> dict[str, int | None]:
        """Which version each stage pointed at at time ``when``."""
        name = self.resolve_model(model)
        with self._read() as s:
            m = s.exec(select(Model).where(col(Model.name) == name)).one()
            return pointers_at(self._stage_changes(s, m.id or 0), when)

    def stage_map(self, model: str | None) -> dict[str, VersionPublic]:
        """Each stage that points at a version, with that version."""
        name = self.resolve_model(model)
        with self._read() as s:
            rows = s.exec(select(Stage.name, Version).join(
                Version, col(Stage.version_id) == col(Version.id)).join(
                Model, col(Stage.model_id) == col(Model.id)).where(col(Model.name) == name)
                .order_by(col(Stage.name)))
            return {stage: self._public(s, v, name) for stage, v in rows}

    # -- traffic -------------------------------------------------------------------------------

    def set_traffic(
        self, model: str | None, weights: dict[str, int], shadow: dict[str, int] | None = None,
        *, actor: str | None = None, reason: str = "",
    ) -> TrafficPolicyPublic:
        """Store the model's traffic policy after validating it against its stages."""
        name = self.resolve_model(model)
        actor = actor or default_actor()
        with self._write() as s:
            m = self._lock_model(s, name)
            stage_versions: dict[str, tuple[int, VersionStatus] | None] = {}
            for st, number, status in s.exec(
                select(Stage.name, Version.number, Version.status)
                .join(Version, col(Stage.version_id) == col(Version.id), isouter=True)
                .where(col(Stage.model_id) == m.id)
            ):
                stage_versions[st] = None if number is None else (number, VersionStatus(status))
            w, sh = validate_policy(weights, shadow, stage_versions)
            now = self.clock()
            row = put_policy(s, m.id or 0, w, sh, actor=actor, reason=reason, at=now)
            audit.record(s, kind=EventKind.traffic_set, at=now, actor=actor, model=name,
                         message=" ".join(f"{k}={v}" for k, v in w.items())
                         + (f" shadow {sh}" if sh else "") + (f" ({reason})" if reason else ""),
                         data={"weights": w, "shadow": sh, "revision": row.revision})
            s.flush()
            return TrafficPolicyPublic.model_validate(row, from_attributes=True,
                                                      update={"model": name})

    def get_traffic(self, model: str) -> TrafficPolicyPublic | None:
        """The stored policy, or None (the gateway then sends everything to production)."""
        with self._read() as s:
            row = s.exec(select(TrafficPolicy).join(
                Model, col(TrafficPolicy.model_id) == col(Model.id)).where(
                col(Model.name) == model)).first()
            return None if row is None else TrafficPolicyPublic.model_validate(
                row, from_attributes=True, update={"model": model})

    # -- serving -------------------------------------------------------------------------------

    def deployments(self) -> list[Deployment]:
        """Every version some stage points at, with what an engine needs to load it."""
        with self._read() as s:
            rows = s.exec(
                select(Model.name, Stage.name, Version, Artifact)
                .join(Stage, col(Stage.model_id) == col(Model.id))
                .join(Version, col(Stage.version_id) == col(Version.id))
                .join(Artifact, col(Version.artifact_digest) == col(Artifact.digest))
                .order_by(col(Model.name), col(Version.number), col(Stage.name))
            )
            out: dict[tuple[str, int], Deployment] = {}
            for model, stage, v, art in rows:
                key = (model, v.number)
                if key in out:
                    out[key].stages.append(stage)
                    continue
                out[key] = Deployment(
                    model=model, version=v.number, adapter_name=adapter_name(model, v.number),
                    stages=[stage], status=v.status, artifact_digest=art.digest,
                    manifest=art.manifest, base_model_path=v.base_model_path,
                    base_model=dict(v.base_model), adapter_rank=v.adapter_rank, method=v.method,
                    identity=dict(art.manifest.get("identity") or {}),
                )
            return list(out.values())

    def fetch_artifact(self, version: VersionPublic, dest_root: Path) -> Path:
        """The version's artifact as a verified local directory ``dest_root/<digest hex>``."""
        if version.artifact_digest is None:
            raise NotFound(f"{version.ref} has no stored artifact (status {version.status})")
        return self.store.materialize(version.artifact_digest, dest_root)

    def change_marker(self) -> int:
        """Cheap: the newest audit event id. Poll it; reload when it moves."""
        with self._read() as s:
            return audit.change_marker(s)

    # -- audit log -----------------------------------------------------------------------------

    def events(self, since_id: int | None = None, *, since: datetime | None = None,
               model: str | None = None, kinds: list[str] | None = None,
               limit: int | None = None) -> list[EventPublic]:
        with self._read() as s:
            return audit.query(s, since_id=since_id, since=since, model=model, kinds=kinds,
                               limit=limit)

    def record_event(self, kind: str, *, actor: str | None = None, model: str | None = None,
                     version: int | None = None, stage: str | None = None,
                     run_id: int | None = None, message: str = "",
                     data: dict[str, Any] | None = None) -> int:
        """Append an event of any kind (e.g. a rollout step); returns its id."""
        with self._write() as s:
            ev = audit.record(s, kind=kind, at=self.clock(), actor=actor or default_actor(),
                              model=model, version=version, stage=stage, run_id=run_id,
                              message=message, data=data)
            s.flush()
            return int(ev.id or 0)

    # -- training runs -------------------------------------------------------------------------

    def create_run(
        self, model: str, spec_hash: str, *, status: str = runs_mod.RunStatus.training,
        workdir: str = "", recipe_path: str | None = None, git_commit: str | None = None,
        git_dirty: bool | None = None, creator: str | None = None, attempts: int = 1,
        phase: str = "", details: dict[str, Any] | None = None,
    ) -> RunPublic:
        check_model_name(model)
        now = self.clock()
        creator = creator or default_actor()
        with self._write() as s:
            run = runs_mod.create(s, Run(
                model=model, spec_hash=spec_hash, status=str(status), phase=phase,
                attempts=attempts, workdir=workdir, recipe_path=recipe_path,
                git_commit=git_commit, git_dirty=git_dirty, creator=creator,
                started_at=now, details=details or {}, created_at=now, updated_at=now))
            audit.record(s, kind=EventKind.run_created, at=now, actor=creator, model=model,
                         run_id=run.id, message=f"run {run.id} {status}",
                         data={"spec_hash": spec_hash, "attempts": attempts})
            return RunPublic.model_validate(run, from_attributes=True)

    def update_run(self, run_id: int, changes: RunUpdate | None = None, *,
                   actor: str | None = None, **fields: Any) -> RunPublic:
        """Partial update (only the fields given); status changes follow RUN_TRANSITIONS."""
        upd = changes or RunUpdate(**fields)
        now = self.clock()
        with self._write() as s:
            run = runs_mod.update(s, run_id, upd, now)
            data = upd.model_dump(exclude_unset=True, mode="json")
            data.pop("log_tail", None)  # the log tail lives on the run, not in every event
            audit.record(s, kind=EventKind.run_updated, at=now, actor=actor or default_actor(),
                         model=run.model, run_id=run_id, version=run.version_number,
                         message=f"run {run_id}: {run.status}"
                         + (f" ({run.phase})" if run.phase else ""), data=data)
            return RunPublic.model_validate(run, from_attributes=True)

    def get_run(self, run_id: int) -> RunPublic:
        with self._read() as s:
            return runs_mod.get(s, run_id)

    def list_runs(self, *, model: str | None = None, spec_hash: str | None = None,
                  status: str | None = None, limit: int | None = None) -> list[RunPublic]:
        with self._read() as s:
            return runs_mod.list_runs(s, model=model, spec_hash=spec_hash, status=status,
                                      limit=limit)
