"""Alembic environment: runs on the connection ``registry.db.upgrade`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

import registry.rollouts  # noqa: F401  (its table joins the metadata)
from registry.tables import metadata

config = context.config


def run_migrations_online() -> None:
    connection: Connection | None = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through registry.db.upgrade(): it passes a connection")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
