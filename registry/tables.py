"""The registry's tables and their public roles (SQLModel: Base / table / Public).

Timestamps are timezone-aware UTC everywhere (SQLite stores them naive; the
column type puts the zone back). JSON columns hold manifests, metrics, gate
results and digests. Stage and audit events are append-only: nothing here
updates or deletes them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import computed_field
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel
from sqlmodel._compat import SQLModelConfig  # SQLModel's own config type, not re-exported

from registry.versions import VersionStatus


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Stores aware datetimes as UTC; returns aware datetimes on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the registry stores UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _as_utc(value)

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], datetime | None] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        # SQLite hands back ISO text: parse it and set the zone in one step, instead of
        # SQLAlchemy's parser wrapped in ours (a 10,000-version listing reads 20,000).
        def parse(value: str | None) -> datetime | None:
            return None if value is None else _as_utc(datetime.fromisoformat(value))

        return parse


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index))


def _json(*, nullable: bool = False) -> Any:
    return Field(sa_column=sa.Column(sa.JSON(), nullable=nullable))


class RegistryModel(SQLModel):
    """Base of every model here. Pydantic builds a model's validator and serializer when it
    is first used, not at import: a command uses a few of these 24 (~10 ms of start-up)."""

    model_config = SQLModelConfig(defer_build=True)


# ---- models ---------------------------------------------------------------------------------


class ModelBase(RegistryModel):
    name: str = Field(max_length=63, unique=True, index=True)
    description: str = Field(default="")


class Model(ModelBase, table=True):
    __tablename__ = "models"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = _ts()


class ModelPublic(ModelBase):
    id: int
    created_at: datetime
    versions: int = 0
    latest: int | None = None
    stages: dict[str, int | None] = {}


# ---- artifacts ------------------------------------------------------------------------------


class Artifact(RegistryModel, table=True):
    """A stored artifact directory: its manifest names every file's sha256."""

    __tablename__ = "artifacts"

    digest: str = Field(primary_key=True, max_length=80)  # sha256:<hex> of manifest.json
    manifest: dict[str, Any] = _json()
    size_bytes: int
    file_count: int
    created_at: datetime = _ts()


# ---- versions -------------------------------------------------------------------------------


class VersionBase(RegistryModel):
    number: int
    status: VersionStatus = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    spec_hash: str = Field(max_length=80, index=True)
    artifact_digest: str | None = Field(default=None, foreign_key="artifacts.digest")
    recipe_text: str = ""
    recipe_path: str | None = None
    data_digests: dict[str, str] = _json()
    base_model: dict[str, str] = _json()
    base_model_path: str = ""
    method: str = ""
    adapter_rank: int | None = None
    objective: str = ""
    metrics: dict[str, Any] = _json()
    gates_passed: bool | None = None
    gate_results: Any = _json(nullable=True)
    run_id: int | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    creator: str = ""
    parent_number: int | None = None  # the model's previous version, for lineage
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Version(VersionBase, table=True):
    __tablename__ = "versions"
    __table_args__ = (
        sa.UniqueConstraint("model_id", "number", name="uq_versions_model_number"),
        sa.UniqueConstraint("model_id", "spec_hash", name="uq_versions_model_spec"),
    )

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="models.id", index=True)


class VersionPublic(VersionBase):
    id: int
    model: str
    stages: list[str] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def adapter_name(self) -> str:
        """The name the serving engine loads this version under; in every dump of it."""
        return f"{self.model}@v{self.number}"

    @property
    def ref(self) -> str:
        return f"{self.model}@v{self.number}"


# ---- stages ---------------------------------------------------------------------------------


class Stage(RegistryModel, table=True):
    """The current pointer of a stage; always equal to its last stage event."""

    __tablename__ = "stages"

    model_id: int = Field(foreign_key="models.id", primary_key=True)
    name: str = Field(primary_key=True, max_length=32)
    version_id: int | None = Field(default=None, foreign_key="versions.id")
    updated_at: datetime = _ts()


class StageEventBase(RegistryModel):
    stage: str = Field(max_length=32)
    action: str = Field(max_length=16)
    from_version: int | None = None
    to_version: int | None = None
    actor: str = ""
    reason: str = ""
    forced: bool = False
    at: datetime = _ts(index=True)


class StageEvent(StageEventBase, table=True):
    __tablename__ = "stage_events"

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="models.id", index=True)


class StageEventPublic(StageEventBase):
    id: int
    model: str


# ---- traffic --------------------------------------------------------------------------------


class TrafficPolicyRow(RegistryModel, table=True):
    """A model's stored traffic policy; ``registry.traffic.TrafficPolicy`` is its value."""

    __tablename__ = "traffic_policies"

    model_id: int = Field(foreign_key="models.id", primary_key=True)
    weights: dict[str, int] = _json()
    shadow: dict[str, int] = _json()  # {stage: percent}, at most one entry
    actor: str = ""
    reason: str = ""
    revision: int = 1
    updated_at: datetime = _ts()


# ---- training runs --------------------------------------------------------------------------


class RunBase(RegistryModel):
    model: str = Field(max_length=63, index=True)
    spec_hash: str = Field(max_length=80, index=True)
    status: str = Field(max_length=16, index=True)
    phase: str = ""
    attempts: int = 0
    workdir: str = ""
    log_tail: str = ""
    error: str = ""
    version_number: int | None = None
    recipe_path: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    creator: str = ""
    next_retry_at: datetime | None = _ts(nullable=True)
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)
    details: dict[str, Any] = _json()


class Run(RunBase, table=True):
    __tablename__ = "runs"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class RunPublic(RunBase):
    id: int
    created_at: datetime
    updated_at: datetime


class RunUpdate(RegistryModel):
    """Partial update of a run: only the fields set are written (``exclude_unset``)."""

    status: str | None = None
    phase: str | None = None
    attempts: int | None = None
    workdir: str | None = None
    log_tail: str | None = None
    error: str | None = None
    version_number: int | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    next_retry_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    details: dict[str, Any] | None = None


# ---- audit log ------------------------------------------------------------------------------


class EventBase(RegistryModel):
    at: datetime = _ts(index=True)
    kind: str = Field(max_length=48, index=True)
    actor: str = ""
    model: str | None = Field(default=None, max_length=63, index=True)
    version: int | None = None
    stage: str | None = None
    run_id: int | None = None
    message: str = ""
    data: dict[str, Any] = _json()


class Event(EventBase, table=True):
    __tablename__ = "events"

    id: int | None = Field(default=None, primary_key=True)


class EventPublic(EventBase):
    id: int


# ---- leases ---------------------------------------------------------------------------------


class LeaseBase(RegistryModel):
    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=200)
    acquired_at: datetime = _ts()
    heartbeat_at: datetime = _ts()
    expires_at: datetime = _ts()


class Lease(LeaseBase, table=True):
    __tablename__ = "leases"


class LeasePublic(LeaseBase):
    pass


metadata = SQLModel.metadata

# Core Table objects, for the few statements written in SQLAlchemy Core (upserts, leases).
models_table: sa.Table = Model.__table__  # type: ignore[attr-defined]
leases_table: sa.Table = Lease.__table__  # type: ignore[attr-defined]
versions_table: sa.Table = Version.__table__  # type: ignore[attr-defined]
