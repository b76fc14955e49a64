"""Initial schema: models, artifacts, versions, stages, stage events, traffic, runs, events, leases.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_models_name", "models", ["name"], unique=True)

    op.create_table(
        "artifacts",
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("digest"),
    )

    op.create_table(
        "versions",
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec_hash", sa.String(80), nullable=False),
        sa.Column("artifact_digest", sa.String(), nullable=True),
        sa.Column("recipe_text", sa.String(), nullable=False),
        sa.Column("recipe_path", sa.String(), nullable=True),
        sa.Column("data_digests", sa.JSON(), nullable=False),
        sa.Column("base_model", sa.JSON(), nullable=False),
        sa.Column("base_model_path", sa.String(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("adapter_rank", sa.Integer(), nullable=True),
        sa.Column("objective", sa.String(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("gates_passed", sa.Boolean(), nullable=True),
        sa.Column("gate_results", sa.JSON(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("git_commit", sa.String(), nullable=True),
        sa.Column("git_dirty", sa.Boolean(), nullable=True),
        sa.Column("creator", sa.String(), nullable=False),
        sa.Column("parent_number", sa.Integer(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["artifact_digest"], ["artifacts.digest"]),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "number", name="uq_versions_model_number"),
        sa.UniqueConstraint("model_id", "spec_hash", name="uq_versions_model_spec"),
    )
    op.create_index("ix_versions_model_id", "versions", ["model_id"])
    op.create_index("ix_versions_spec_hash", "versions", ["spec_hash"])

    op.create_table(
        "stages",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=True),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.ForeignKeyConstraint(["version_id"], ["versions.id"]),
        sa.PrimaryKeyConstraint("model_id", "name"),
    )

    op.create_table(
        "stage_events",
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        _ts("at"),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_stage_events_at", "stage_events", ["at"])
    op.create_index("ix_stage_events_model_id", "stage_events", ["model_id"])

    op.create_table(
        "traffic_policies",
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("shadow", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        _ts("updated_at"),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.PrimaryKeyConstraint("model_id"),
    )

    op.create_table(
        "runs",
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("spec_hash", sa.String(80), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("workdir", sa.String(), nullable=False),
        sa.Column("log_tail", sa.String(), nullable=False),
        sa.Column("error", sa.String(), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=True),
        sa.Column("recipe_path", sa.String(), nullable=True),
        sa.Column("git_commit", sa.String(), nullable=True),
        sa.Column("git_dirty", sa.Boolean(), nullable=True),
        sa.Column("creator", sa.String(), nullable=False),
        _ts("next_retry_at", nullable=True),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_runs_model", "runs", ["model"])
    op.create_index("ix_runs_spec_hash", "runs", ["spec_hash"])
    op.create_index("ix_runs_status", "runs", ["status"])

    op.create_table(
        "events",
        _ts("at"),
        sa.Column("kind", sa.String(48), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("model", sa.String(63), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("stage", sa.String(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("message", sa.String(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_events_at", "events", ["at"])
    op.create_index("ix_events_kind", "events", ["kind"])
    op.create_index("ix_events_model", "events", ["model"])

    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        _ts("acquired_at"),
        _ts("heartbeat_at"),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    for table in ("leases", "events", "runs", "traffic_policies", "stage_events", "stages",
                  "versions", "artifacts", "models"):
        op.drop_table(table)
