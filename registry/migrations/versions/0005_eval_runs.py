"""Re-evaluations: one row per `reg eval run`, with each metric's regression flag.

Revision ID: 0005_eval_runs
Revises: 0004_human_evaluations
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005_eval_runs"
down_revision: str | None = "0004_human_evaluations"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gateway", sa.String(), nullable=False),
        sa.Column("tolerance", sa.Float(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("skipped", sa.JSON(), nullable=False),
        sa.Column("regressed", sa.Boolean(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("actor", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_eval_runs_model_id", "eval_runs", ["model_id"])


def downgrade() -> None:
    op.drop_index("ix_eval_runs_model_id", table_name="eval_runs")
    op.drop_table("eval_runs")
