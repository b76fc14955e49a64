"""Models carry their recipe's metadata: labels and owner beside the description.

Revision ID: 0003_model_metadata
Revises: 0002_rollouts
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_model_metadata"
down_revision: str | None = "0002_rollouts"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Plain ADD COLUMN on every backend (SQLite takes a NOT NULL column with a default): a
    # batch rebuild of `models` would drop a table that versions and stages point at.
    # The server defaults fill the rows already there.
    op.add_column("models", sa.Column("labels", sa.JSON(), nullable=False,
                                      server_default=sa.text("'{}'")))
    op.add_column("models", sa.Column("owner", sa.String(), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("models", "owner")
    op.drop_column("models", "labels")
