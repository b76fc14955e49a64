"""Human evaluations: one row per `reg eval import`, the newest of a version its verdict.

Revision ID: 0004_human_evaluations
Revises: 0003_model_metadata
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004_human_evaluations"
down_revision: str | None = "0003_model_metadata"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "human_evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("other", sa.Integer(), nullable=True),
        sa.Column("export_id", sa.String(32), nullable=False),
        sa.Column("win_rate", sa.Float(), nullable=True),
        sa.Column("alpha", sa.Float(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_human_evaluations_model_id", "human_evaluations", ["model_id"])


def downgrade() -> None:
    op.drop_index("ix_human_evaluations_model_id", table_name="human_evaluations")
    op.drop_table("human_evaluations")
