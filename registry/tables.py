"""The registry's tables and their public roles (SQLModel: Base / table / Public).

Timestamps are timezone-aware UTC everywhere (SQLite stores them naive; the
column type puts the zone back). Statuses and stage actions are ``StrEnum``
columns: the value string is stored (as before they were typed),
a value outside the enum is refused when written, and rows read back as
members. JSON columns hold manifests, metrics, gate results and digests.
Stage and audit events are append-only: nothing here updates or deletes them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import computed_field
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel
from sqlmodel._compat import SQLModelConfig  # SQLModel's own config type, not re-exported

from recipes.core.names import adapter_name
from registry.runs import RunStatus
from registry.stages import StageAction
from registry.versions import VersionStatus

E = TypeVar("E", bound=StrEnum)


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


class StrEnumText(sa.types.TypeDecorator[E]):
    """A ``StrEnum`` stored as its value string (VARCHAR: no database enum type to migrate).

    Writing refuses a value outside the enum; reading gives the member back, and names the
    column's enum when the database holds a value the code does not know.
    """

    impl = sa.String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length)
        self.enum = enum
        self._members: dict[str, E] = {m.value: m for m in enum}

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        member = self._members.get(str(value))
        if member is None:
            raise ValueError(f"{value!r} is not a {self.enum.__name__} "
                             f"(one of {', '.join(self._members)})")
        return member.value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        if value is None:
            return None
        member = self._members.get(value)
        if member is None:
            raise ValueError(f"the database holds {value!r}, which is not a "
                             f"{self.enum.__name__}: written by a newer reg? upgrade reg")
        return member


def _enum(enum: type[StrEnum], length: int, *, index: bool = False) -> Any:
    return Field(sa_column=sa.Column(StrEnumText(enum, length), nullable=False, index=index))


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
    # From the recipe's metadata, updated at each registration (registry.register).
    description: str = Field(default="")
    labels: dict[str, str] = Field(default_factory=dict, sa_column=sa.Column(
        sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
    owner: str = Field(default="", sa_column=sa.Column(
        sa.String(), nullable=False, server_default=""))


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
    status: VersionStatus = _enum(VersionStatus, 16)
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
        return adapter_name(self.model, self.number)

    @property
    def ref(self) -> str:
        """How commands name this version (``MODEL@vN``), the same text as the adapter name."""
        return adapter_name(self.model, self.number)


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
    action: StageAction = _enum(StageAction, 16)
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
    status: RunStatus = _enum(RunStatus, 16, index=True)
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

    status: RunStatus | None = None
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
    # Open on purpose: the registry's own kinds are registry.events.EventKind, other layers
    # name theirs (rollout.gitops's ReconcileEvent); the registry knows no controller.
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
