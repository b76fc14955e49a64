"""Where the registry keeps its database and artifacts, from the environment.

Read when a registry is opened, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "REG_HOME"
DATABASE_ENV = "REG_DATABASE_URL"
STORE_ENV = "REG_ARTIFACT_STORE"
MODEL_ENV = "REG_MODEL"
ACTOR_ENV = "REG_ACTOR"


@dataclass(frozen=True)
class Settings:
    """The registry's locations.

    ``database_url`` is a SQLAlchemy URL: by default a SQLite file (WAL) under
    ``home``; ``postgresql+psycopg://...`` for PostgreSQL. ``artifact_store``
    is a local directory or any fsspec URL (``s3://bucket/prefix``).
    """

    home: Path
    database_url: str
    artifact_store: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get(HOME_ENV) or ".reg").expanduser().absolute()
        url = env.get(DATABASE_ENV) or f"sqlite:///{home / 'registry.db'}"
        store = env.get(STORE_ENV) or str(home / "artifacts")
        return cls(home=home, database_url=url, artifact_store=store)

    @classmethod
    def for_home(cls, home: Path) -> Settings:
        """Everything under one directory: handy for tests and one-off scripts."""
        home = home.absolute()
        return cls(home, f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def default_actor(env: Mapping[str, str] | None = None) -> str:
    """Who is acting, for the audit log: $REG_ACTOR, else the login name."""
    env = os.environ if env is None else env
    if env.get(ACTOR_ENV):
        return env[ACTOR_ENV]
    for key in ("USER", "LOGNAME", "USERNAME"):
        if env.get(key):
            return env[key]
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # pragma: no cover - platform dependent
        return "unknown"
