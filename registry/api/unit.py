"""The unit of work every part of the facade shares: engine, sessions, model locks, references.

Writers of one model serialise: SQLite write transactions begin IMMEDIATE; PostgreSQL
locks the model's row (:meth:`UnitOfWork._lock_model`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Self

from sqlmodel import Session, col, select

from registry import events as audit
from registry.db import ensure_schema, is_sqlite, open_engine, writer
from registry.deployments import DeployGuard
from registry.errors import Ambiguous, NotFound
from registry.events import EventKind
from registry.settings import Settings, default_actor
from registry.tables import (
    Model,
    Stage,
    Version,
    VersionPublic,
    models_table,
)
from registry.versions import (
    VersionRef,
    check_model_name,
    parse_version_ref,
)

Clock = Callable[[], datetime]

if TYPE_CHECKING:  # keeps fsspec and the lease code off the import path
    from registry.lease import Leases
    from registry.store import ArtifactStore


def utcnow() -> datetime:
    return datetime.now(UTC)


def _format_numbers(numbers: Sequence[int]) -> str:
    if not numbers:
        return "none"
    shown = [f"v{n}" for n in numbers[-12:]]
    return ("..., " if len(numbers) > 12 else "") + ", ".join(shown)


class UnitOfWork:
    """Engine, sessions and the model-row lock shared by every part of the facade."""

    def __init__(self, settings: Settings, *, clock: Clock = utcnow, migrate: bool = True,
                 guards: Sequence[DeployGuard] = ()) -> None:
        self.settings = settings
        self.clock = clock
        # Rules every stage change must pass, in its transaction (registry.deployments).
        self.guards = tuple(guards)
        self.engine = open_engine(settings.database_url)
        self._writer = writer(self.engine)
        self._store: ArtifactStore | None = None
        self._leases: Leases | None = None
        if migrate:
            ensure_schema(self.engine)

    def close(self) -> None:
        if self._leases is not None:
            self._leases.close()
        self.engine.dispose()

    def __enter__(self) -> Self:
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
