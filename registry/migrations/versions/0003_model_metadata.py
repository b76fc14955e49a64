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
    # Server defaults fill the rows already there (SQLite adds a NOT NULL column only with one).
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("labels", sa.JSON(), nullable=False,
                                   server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("owner", sa.String(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("owner")
        batch.drop_column("labels")
