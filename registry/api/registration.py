"""Registering a training artifact as the next version of its model (idempotent by spec hash)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import col, select

from registry import events as audit
from registry.api.unit import UnitOfWork
from registry.errors import Refused
from registry.events import EventKind
from registry.settings import default_actor
from registry.tables import (
    Artifact,
    Model,
    Version,
    VersionPublic,
)
from registry.versions import (
    INITIAL_STATUSES,
    VersionStatus,
    check_model_name,
)

if TYPE_CHECKING:
    from sqlmodel import Session

    from recipes.schema import Metadata


@dataclass(frozen=True)
class RegisterOutcome:
    version: VersionPublic
    created: bool  # False when the spec hash was already registered (idempotent)


class RegistrationApi(UnitOfWork):
    """Registering an artifact as the next version of its model (idempotent by spec hash)."""

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
        metadata: Metadata | None = None,
    ) -> RegisterOutcome:
        """Verify, store and record an artifact as the model's next version (idempotent).

        The same spec hash registered twice returns the existing version
        (``created=False``). The status is ``ready`` when the gates passed and
        ``rejected`` when not, unless ``status_override`` says otherwise. The model's
        description, labels and owner become ``metadata`` (default: the artifact's
        recipe's), on every registration, the idempotent one included.
        """
        from registry.register import as_int, as_str_dict, read_facts

        if status_override is not None and status_override not in INITIAL_STATUSES:
            raise Refused(f"a version cannot be created as {status_override.value}")
        facts = read_facts(artifact_dir, status_override)
        check_model_name(facts.name)
        meta = metadata if metadata is not None else facts.metadata
        creator = creator or default_actor()
        existing = self._by_spec(facts.name, facts.spec_hash)
        if existing is not None:
            if meta is not None:
                with self._write() as s:
                    self._set_metadata(s, self._lock_model(s, facts.name), meta, creator)
            return RegisterOutcome(existing, False)
        digest, manifest, size = self.store.put_artifact(artifact_dir)
        ident = facts.identity
        with self._write() as s:
            m = self._lock_model(s, facts.name, create=True, actor=creator)
            assert m.id is not None
            again = s.exec(select(Version).where(col(Version.model_id) == m.id,
                                                 col(Version.spec_hash) == facts.spec_hash)).first()
            if again is not None:  # registered by a concurrent caller meanwhile
                return RegisterOutcome(self._public(s, again, facts.name), False)
            last = s.exec(select(sa.func.max(Version.number)).where(
                col(Version.model_id) == m.id)).one()
            if meta is not None:  # a model's first version: its model.created says enough
                self._set_metadata(s, m, meta, creator, record=last is not None)
            if s.get(Artifact, digest) is None:
                s.add(Artifact(digest=digest, manifest=manifest, size_bytes=size,
                               file_count=len(manifest["files"]), created_at=self.clock()))
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

    def _set_metadata(self, s: Session, m: Model, meta: Metadata, actor: str, *,
                      record: bool = True) -> None:
        """Give the model ``meta``'s description, labels and owner; an event says what changed."""
        from registry.register import metadata_changes

        changes = metadata_changes(m, meta)
        if not changes:
            return
        for key, (_, new) in changes.items():
            setattr(m, key, new)
        s.add(m)
        if record:
            audit.record(
                s, kind=EventKind.model_updated, at=self.clock(), actor=actor, model=m.name,
                message=f"model {m.name}: {', '.join(changes)} changed",
                data={k: {"from": old, "to": new} for k, (old, new) in changes.items()})

    def _by_spec(self, model: str, spec_hash: str) -> VersionPublic | None:
        with self._read() as s:
            row = s.exec(select(Version).join(Model, col(Version.model_id) == col(Model.id))
                         .where(col(Model.name) == model, col(Version.spec_hash) == spec_hash)
                         ).first()
            return None if row is None else self._public(s, row, model)

    def find_by_spec_hash(self, model: str, spec_hash: str) -> VersionPublic | None:
        """The version registered for ``spec_hash``, if any (the reconciler's in-sync check)."""
        return self._by_spec(model, spec_hash)
