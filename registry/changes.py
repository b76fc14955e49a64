"""Hearing registry changes as they commit, so readers need not wait for their next poll.

On PostgreSQL every transaction that records an audit event also sends a ``NOTIFY`` on
:data:`CHANNEL` (:func:`notify`, called by :func:`registry.events.record`). PostgreSQL
delivers it when, and only if, the transaction commits, once per transaction however many
events it holds, to every session listening: :class:`PostgresChangeFeed` is one such
session, held open by a reader (the gateway's supervisor) that waits on it between passes.

SQLite has nothing like it: :meth:`registry.api.Registry.change_feed` returns None there and
readers keep polling the change marker, as they always have. The marker stays the truth on
both: a notification only says "read it now".
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlmodel import Session

if TYPE_CHECKING:  # imported where a feed opens: every `reg` command records events
    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "reg_changes"


def notify(session: Session) -> None:
    """Queue a notification in ``session``'s transaction (sent at commit; PostgreSQL only)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


def listen_url(database_url: str) -> str:
    """The libpq URL of a SQLAlchemy ``postgresql+psycopg://`` one (its query kept)."""
    url = sa.make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PostgresChangeFeed:
    """A session LISTENing on :data:`CHANNEL`, opened on first use and reopened after the
    server or the network drops it (a wait after a drop answers True: changes committed
    while nobody listened were not heard, so the reader reads)."""

    def __init__(self, database_url: str, *, connect_timeout_s: float = 5.0) -> None:
        self._url = listen_url(database_url)
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._closed = False

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg

        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self._url, autocommit=True,
                                   connect_timeout=max(1, round(self._connect_timeout_s)))
            conn.execute(f"LISTEN {CHANNEL}")
            self._conn = conn
        return self._conn

    def wait(self, timeout_s: float) -> bool:
        """Block until a change commits (True) or ``timeout_s`` passes (False). True at once
        when the listening session had to be (re)opened: what committed before it listened
        was not heard, so the reader reads. Never raises for a lost connection: it sleeps
        the timeout instead, so a reader falls back to polling while the database is away.
        """
        import psycopg

        if self._closed:  # its owner is done with it: no session is reopened
            time.sleep(timeout_s)
            return False
        try:
            if self._conn is None or self._conn.closed:
                self._connection()
                return True
            assert self._conn is not None
            heard = False
            for _ in self._conn.notifies(timeout=timeout_s, stop_after=1):
                heard = True
            if heard:  # and what else is queued: one read covers them all
                for _ in self._conn.notifies(timeout=0):
                    pass
            return heard
        except psycopg.Error as e:
            if self._closed:  # closed by its owner while waiting: not a fault
                return False
            log.warning("registry change feed lost (%s); polling until it is back", e)
            self._drop()
            time.sleep(timeout_s)
            return True

    def _drop(self) -> None:
        import psycopg

        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        """Stop listening; a wait in progress in another thread ends (False) at once."""
        self._closed = True
        self._drop()
