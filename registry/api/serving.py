"""What serving reads: the deployed versions, their artifacts, and a cheap change marker."""

from __future__ import annotations

from pathlib import Path

from registry import events as audit
from registry.api.unit import UnitOfWork
from registry.changes import PostgresChangeFeed
from registry.db import is_sqlite
from registry.deployments import Deployment, load_deployments
from registry.errors import NotFound
from registry.tables import VersionPublic


class ServingApi(UnitOfWork):
    """What serving reads: the deployed versions, their artifacts, and a cheap change marker."""

    def deployments(self) -> list[Deployment]:
        """Every version some stage points at, with what an engine needs to serve it."""
        with self._read() as s:
            return load_deployments(s)

    def fetch_artifact(self, version: VersionPublic, dest_root: Path) -> Path:
        """The version's artifact as a verified local directory ``dest_root/<digest hex>``."""
        if version.artifact_digest is None:
            raise NotFound(f"{version.ref} has no stored artifact (status {version.status})")
        return self.store.materialize(version.artifact_digest, dest_root)

    def change_marker(self) -> int:
        """Cheap: the newest audit event id. Poll it; reload when it moves."""
        with self._read() as s:
            return audit.change_marker(s)

    def change_feed(self) -> PostgresChangeFeed | None:
        """A feed that wakes its reader when a change commits (PostgreSQL's LISTEN/NOTIFY);
        None on SQLite, where readers poll :meth:`change_marker`. The caller closes it."""
        if is_sqlite(self.engine):
            return None
        return PostgresChangeFeed(self.settings.database_url)
