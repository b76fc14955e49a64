"""Database engines, transactions and schema migrations.

No engine exists until :func:`open_engine` is called. SQLite gets WAL mode,
a busy timeout and foreign keys on every connection, and write transactions
start with ``BEGIN IMMEDIATE`` so two writers serialise at the start of a
transaction instead of failing at commit (pysqlite's own transaction
handling is switched off for that, as SQLAlchemy's docs recommend).
PostgreSQL writers serialise on a row lock (``SELECT ... FOR UPDATE``).

The schema is managed by Alembic, run programmatically from the package
(``registry/migrations``). :func:`ensure_schema` costs one query when the
database is already at the head revision, so commands can call it on every
start; otherwise it migrates under a lock (a file lock beside a SQLite file,
an advisory lock on PostgreSQL) so concurrent first uses do not collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic_core import from_json
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

# Bump together with a new file in registry/migrations/versions (a test checks they agree).
HEAD_REVISION = "0005_eval_runs"
SQLITE_BUSY_TIMEOUT_MS = 60_000
WRITE_OPTION = "reg_write"
_MIGRATION_LOCK_KEY = 0x7265675F6D6967  # "reg_mig", for pg_advisory_lock
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def loads_json(text: str | bytes) -> Any:
    """JSON columns' decoder: pydantic-core's parser, about twice as fast as ``json.loads``
    on the small documents we store (4 JSON columns a version make it a third of a
    10,000-version listing); the same values, except that it stops at 200 levels of nesting,
    where ``json.loads`` takes over."""
    try:
        return from_json(text)
    except ValueError:
        return json.loads(text)


def open_engine(url: str) -> Engine:
    """An engine for ``url`` with the registry's connection settings."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                            json_deserializer=loads_json)


def _sqlite_engine(url: str) -> Engine:
    parsed = sa.engine.make_url(url)
    memory = parsed.database in (None, "", ":memory:")
    if not memory and parsed.database:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {
        "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        "json_deserializer": loads_json,
    }
    if memory:
        kwargs["poolclass"] = StaticPool
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe with WAL
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def writer(engine: Engine) -> Engine:
    """The same engine, with transactions that take the write lock up front on SQLite."""
    return engine.execution_options(**{WRITE_OPTION: True})


def current_revision(engine: Engine) -> str | None:
    """The schema revision stored in the database, or None for an empty database."""
    with engine.connect() as conn:
        try:  # one query on every start; the table is looked for only when it fails
            row = conn.execute(sa.text("SELECT version_num FROM alembic_version")).first()
        except sa.exc.DBAPIError:
            conn.rollback()
            if sa.inspect(conn).has_table("alembic_version"):
                raise  # the table is there: a real error (locked, server gone, ...)
            return None
        conn.rollback()
        return None if row is None else str(row[0])


def ensure_schema(engine: Engine) -> bool:
    """Migrate to the head revision unless already there. Returns True when it migrated."""
    try:
        if current_revision(engine) == HEAD_REVISION:
            return False
    except sa.exc.OperationalError:
        pass  # e.g. the file is being created by another process; decide under the lock
    with _migration_lock(engine):
        if current_revision(engine) == HEAD_REVISION:
            return False
        upgrade(engine)
        return True


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run Alembic's upgrade on ``engine`` (what `reg db upgrade` does)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def script_head() -> str | None:
    """The head revision according to the migration scripts on disk."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if is_sqlite(engine):
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
        with lock_path.open("a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            conn.commit()
