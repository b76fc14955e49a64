"""Reading models and versions, and changing a version's status (one table of transitions)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import col, select

from registry import events as audit
from registry.api.unit import UnitOfWork
from registry.errors import NotFound
from registry.events import EventKind
from registry.settings import default_actor
from registry.tables import (
    Artifact,
    Model,
    ModelPublic,
    Stage,
    Version,
    VersionPublic,
    metadata,
    models_table,
    versions_table,
)
from registry.versions import (
    VersionStatus,
    check_status_transition,
)


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
        values["stages"] = stages.get(values["id"], [])
        out.append(out[0].model_copy(update=values) if out
                   else VersionPublic.model_construct(**values))
    return out


class VersionSummary(NamedTuple):
    """The few columns of a version a controller plans with (no recipe, metrics or manifest)."""

    model: str
    number: int
    spec_hash: str
    status: str
    created_at: datetime
    git_commit: str | None
    stages: tuple[str, ...]


class VersionsApi(UnitOfWork):
    """Reading models and versions, and changing a version's status (one table of transitions)."""

    def version_summaries(self) -> list[VersionSummary]:
        """Every version of every model, a few columns each: what a controller's pass over
        1,000s of versions reads (``list_versions`` builds full public models)."""
        vt, mt, st = versions_table, models_table, metadata.tables["stages"]
        # Core statements on a plain connection: the ORM's per-statement work is most of
        # what two queries cost here.
        with self.engine.connect() as conn:
            stages: dict[int, list[str]] = {}
            for vid, name in conn.execute(sa.select(st.c.version_id, st.c.name).where(
                    st.c.version_id.is_not(None)).order_by(st.c.name)):
                stages.setdefault(vid, []).append(name)
            rows = conn.execute(sa.select(
                vt.c.id, mt.c.name, vt.c.number, vt.c.spec_hash, vt.c.status, vt.c.created_at,
                vt.c.git_commit).join(mt, vt.c.model_id == mt.c.id)).all()
            conn.rollback()
        # Rows unpacked as tuples: attribute access on 1,000s of rows costs more than the rest.
        return [VersionSummary(name, number, spec_hash, str(status), created_at, git_commit,
                               tuple(stages.get(vid, ())))
                for vid, name, number, spec_hash, status, created_at, git_commit in rows]

    def list_models(self, *, labels: Mapping[str, str] | None = None) -> list[ModelPublic]:
        """Models by name; with ``labels``, only those carrying every one of them."""
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
                if labels and any(m.labels.get(k) != v for k, v in labels.items()):
                    continue
                n, latest = counts.get(m.id, (0, None))
                out.append(ModelPublic.model_validate(m, from_attributes=True, update={
                    "versions": n, "latest": latest, "stages": pointers.get(m.id, {})}))
            return out

    def get_model(self, name: str | None) -> ModelPublic:
        """One model (the only one when ``name`` is None), as ``list_models`` lists it."""
        name = self.resolve_model(name)
        (model,) = [m for m in self.list_models() if m.name == name]
        return model

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
                stmt = stmt.where(vt.c.status == status)
            stmt = stmt.order_by(vt.c.id.desc())
            if limit is not None:
                stmt = stmt.limit(limit)
            by_version: dict[int, list[str]] = {}
            for vid, name in s.exec(select(Stage.version_id, Stage.name).where(
                    col(Stage.version_id).is_not(None)).order_by(col(Stage.name))):
                if vid is not None:
                    by_version.setdefault(vid, []).append(name)
            rows = s.execute(stmt).all()
            return _versions_from_rows([c.name for c in columns] + ["model"], reversed(rows),
                                       by_version)

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
