"""The audit log through the facade: query and append events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from registry import events as audit
from registry.api.unit import UnitOfWork
from registry.settings import default_actor
from registry.tables import (
    EventPublic,
)


class AuditApi(UnitOfWork):
    """The audit log through the facade: query and append events."""

    def events(self, since_id: int | None = None, *, since: datetime | None = None,
               model: str | None = None, kinds: list[str] | None = None,
               limit: int | None = None) -> list[EventPublic]:
        with self._read() as s:
            return audit.query(s, since_id=since_id, since=since, model=model, kinds=kinds,
                               limit=limit)

    def record_event(self, kind: str, *, actor: str | None = None, model: str | None = None,
                     version: int | None = None, stage: str | None = None,
                     run_id: int | None = None, message: str = "",
                     data: dict[str, Any] | None = None) -> int:
        """Append an event of any kind (e.g. a rollout step); returns its id."""
        with self._write() as s:
            ev = audit.record(s, kind=kind, at=self.clock(), actor=actor or default_actor(),
                              model=model, version=version, stage=stage, run_id=run_id,
                              message=message, data=data)
            s.flush()
            return int(ev.id or 0)
