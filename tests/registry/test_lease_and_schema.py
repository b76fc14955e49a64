"""Leases (one reconciler at a time) and schema migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from registry.api import Registry, utcnow
from registry.db import HEAD_REVISION, current_revision, ensure_schema, open_engine, script_head
from registry.settings import Settings
from registry.tables import metadata
from tests.support.paths import REPO


def test_lease_excludes_others_until_released(settings: Settings) -> None:
    with Registry(settings, clock=utcnow) as a, Registry(settings, clock=utcnow) as b:
        got = a.leases.acquire("reconciler", "host-a:1", ttl_s=30)
        assert got is not None and got.holder == "host-a:1"
        assert b.leases.acquire("reconciler", "host-b:2", ttl_s=30) is None
        held = b.leases.get("reconciler")
        assert held is not None and held.holder == "host-a:1"
        assert held.acquired_at == got.acquired_at
        assert a.leases.renew("reconciler", "host-a:1", ttl_s=30)
        assert not b.leases.renew("reconciler", "host-b:2", ttl_s=30)
        again = a.leases.acquire("reconciler", "host-a:1", ttl_s=30)  # re-entrant for its holder
        assert again is not None and again.acquired_at == got.acquired_at
        assert not b.leases.release("reconciler", "host-b:2")
        assert a.leases.release("reconciler", "host-a:1")
        taken = b.leases.acquire("reconciler", "host-b:2", ttl_s=30)
        assert taken is not None and taken.holder == "host-b:2"


def test_a_dead_holders_lease_is_taken_over(settings: Settings, tmp_path: Path) -> None:
    """A real process takes the lease and dies without releasing it."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from registry.api import Registry, utcnow\n"
        "from registry.settings import Settings\n"
        f"s = Settings(Path({str(settings.home)!r}), {settings.database_url!r}, "
        f"{settings.artifact_store!r})\n"
        "reg = Registry(s, clock=utcnow)\n"
        "assert reg.leases.acquire('reconciler', 'doomed:1', ttl_s=1.5) is not None\n"
        "os._exit(0)\n"  # no release, no clean shutdown
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
    with Registry(settings, clock=utcnow) as reg:
        held = reg.leases.get("reconciler")
        assert held is not None and held.holder == "doomed:1"
        first = reg.leases.acquire("reconciler", "heir:2", ttl_s=30)
        if settings.is_sqlite:
            assert first is None  # the row has not expired yet
            time.sleep(max(0.0, (held.expires_at - utcnow()).total_seconds()) + 0.1)
            first = reg.leases.acquire("reconciler", "heir:2", ttl_s=30)
        # On PostgreSQL the dead session's advisory lock is gone at once.
        assert first is not None and first.holder == "heir:2"


def test_migration_head_matches_the_scripts() -> None:
    assert script_head() == HEAD_REVISION


def test_migrated_schema_equals_the_tables(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = open_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert ensure_schema(engine) is True
        assert ensure_schema(engine) is False  # one query when already at head
        assert current_revision(engine) == HEAD_REVISION
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, metadata) == []
    finally:
        engine.dispose()


def test_sqlite_uses_wal_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 30_000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_settings_default_under_reg_home(tmp_path: Path) -> None:
    s = Settings.from_env({"REG_HOME": str(tmp_path / "h")})
    assert s.database_url == f"sqlite:///{tmp_path / 'h' / 'registry.db'}"
    assert s.artifact_store == str(tmp_path / "h" / "artifacts")
    s2 = Settings.from_env({"REG_DATABASE_URL": "postgresql+psycopg://u@h/db",
                            "REG_ARTIFACT_STORE": "s3://b/p"})
    assert (s2.database_url, s2.artifact_store, s2.is_sqlite) == (
        "postgresql+psycopg://u@h/db", "s3://b/p", False)


def test_opening_does_not_create_an_engine_at_import(tmp_path: Path) -> None:
    code = ("import sys, registry.api, registry.db, registry.tables\n"
            "import sqlalchemy.pool\n"
            "import gc\n"
            "engines = [o for o in gc.get_objects() if type(o).__name__ == 'Engine']\n"
            "print(len(engines))\n")
    env = {**os.environ, "REG_HOME": str(tmp_path / "nowhere")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == "0"
    assert not (tmp_path / "nowhere").exists()


def test_reg_db_upgrade(tmp_path: Path) -> None:
    env = {**os.environ, "REG_HOME": str(tmp_path / "home")}
    reg = [sys.executable, "-m", "reg_cli.main"]
    first = subprocess.run([*reg, "db", "upgrade"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert f"None -> {HEAD_REVISION}" in first.stdout
    second = subprocess.run([*reg, "db", "upgrade", "--json"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert json.loads(second.stdout)["from"] == json.loads(second.stdout)["to"] == HEAD_REVISION
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'home' / 'registry.db'}")
    try:
        assert set(sa.inspect(engine).get_table_names()) >= {"models", "versions", "stage_events"}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_migrations_ship_in_the_wheel(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for pkg in ("recipes", "registry", "serving", "rollout", "reg_cli"):
        if (REPO / pkg).is_dir():
            shutil.copytree(REPO / pkg, src / pkg,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300,
                   capture_output=True)
    wheel = next((tmp_path / "dist").glob("reg-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"registry/migrations/env.py", "registry/migrations/script.py.mako",
            "registry/migrations/versions/0001_initial.py"} <= names
