"""Named leases in the database: "one controller of each kind at a time", with a heartbeat.

The one lease helper every controller uses (through :mod:`rollout.controller.lease`):

1. **acquire**: one atomic conditional statement: insert the row if absent,
   else update it only if it is ours or expired, and count the rows written;
2. **renew** (the heartbeat) before ``expires_at``; False once another holder
   has taken it over;
3. **reclaim**: a holder that is a process of this host and pid namespace and
   has exited (``kill -9``) is freed at once; any other holder that died
   simply stops renewing and the next caller takes the lease over at expiry;
4. **release**, only by its holder.

A lease row says who holds it (:func:`local_holder`), since when, and until when.

On PostgreSQL a session-level advisory lock (``pg_try_advisory_lock``) is
taken as well, on a connection the lease keeps open: the server drops it the
moment the holder's process or connection dies, so a dead holder's lease is
taken over at once instead of after its expiry, and two holders can never
both believe they hold it.
"""

from __future__ import annotations

import os
import socket
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from registry.db import is_sqlite, writer
from registry.tables import LeasePublic, leases_table

Clock = Callable[[], datetime]


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:")
    except OSError:
        return "-"


def local_holder() -> str:
    """``host:pid:pid-namespace``: who holds a lease, precise enough to tell it is dead."""
    return f"{socket.gethostname()}:{os.getpid()}:{_pid_namespace()}"


def holder_is_dead(holder: str) -> bool:
    """True only when ``holder`` is a process of this host and pid namespace that has exited.

    Any doubt (another host, another container, a reused pid, a holder name
    not made by :func:`local_holder`) answers False, and the lease simply expires.
    """
    parts = holder.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or parts[2] != _pid_namespace():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def _advisory_key(name: str) -> int:
    return zlib.crc32(f"reg-lease:{name}".encode())


class Leases:
    """Acquire, renew, reclaim, release and read leases on one database."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._write = writer(engine)
        self._clock = clock
        self._advisory: dict[str, Connection] = {}

    def get(self, name: str) -> LeasePublic | None:
        t = leases_table
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.name == name)).mappings().first()
            conn.rollback()
        return None if row is None else LeasePublic.model_validate(dict(row))

    def acquire(self, name: str, holder: str, ttl_s: float) -> LeasePublic | None:
        """Take the lease (or extend ours). Returns it, or None when another live holder has it."""
        forced = False
        if not is_sqlite(self._engine) and name not in self._advisory:
            conn = self._engine.connect()
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                               {"k": _advisory_key(name)}).scalar()
            conn.commit()
            if not got:
                conn.close()
                return None
            self._advisory[name] = conn
            forced = True  # whoever held the row before has lost its session
        now = self._clock()
        expires = now + timedelta(seconds=ttl_s)
        t = leases_table
        with self._write.begin() as conn:
            values = {"name": name, "holder": holder, "acquired_at": now,
                      "heartbeat_at": now, "expires_at": expires}
            if is_sqlite(self._engine):
                from sqlalchemy.dialects.sqlite import insert as sqlite_insert

                taken = conn.execute(
                    sqlite_insert(t).values(**values).on_conflict_do_nothing()).rowcount == 1
            else:
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                taken = conn.execute(
                    pg_insert(t).values(**values).on_conflict_do_nothing()).rowcount == 1
            if not taken:
                cond = sa.true() if forced else sa.or_(t.c.holder == holder, t.c.expires_at < now)
                upd = (
                    sa.update(t)
                    .where(t.c.name == name, cond)
                    .values(
                        holder=holder,
                        acquired_at=sa.case((t.c.holder == holder, t.c.acquired_at), else_=now),
                        heartbeat_at=now,
                        expires_at=expires,
                    )
                )
                taken = conn.execute(upd).rowcount == 1
        if not taken:
            self._drop_advisory(name)
            return None
        return self.get(name)

    def renew(self, name: str, holder: str, ttl_s: float) -> bool:
        """The heartbeat: extend our lease. False when it is no longer ours (stop working then)."""
        now = self._clock()
        t = leases_table
        with self._write.begin() as conn:
            n = conn.execute(
                sa.update(t)
                .where(t.c.name == name, t.c.holder == holder)
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=ttl_s))
            ).rowcount
        return n == 1

    def reclaim(self, name: str) -> LeasePublic | None:
        """Free the lease when its holder is a dead process of this host (:func:`holder_is_dead`).

        Returns the lease that was freed, or None when there was none or its
        holder may be alive. Only that holder's row is deleted, so two
        reclaimers cannot both win: the insert in :meth:`acquire` admits one.
        """
        held = self.get(name)
        if held is None or not holder_is_dead(held.holder):
            return None
        return held if self._delete(name, held.holder) else None

    def release(self, name: str, holder: str) -> bool:
        """Give the lease up (only if it is ours)."""
        released = self._delete(name, holder)
        self._drop_advisory(name)
        return released

    def _delete(self, name: str, holder: str) -> bool:
        t = leases_table
        with self._write.begin() as conn:
            n = conn.execute(sa.delete(t).where(t.c.name == name, t.c.holder == holder)).rowcount
        return n == 1

    def close(self) -> None:
        for name in list(self._advisory):
            self._drop_advisory(name)

    def _drop_advisory(self, name: str) -> None:
        conn = self._advisory.pop(name, None)
        if conn is None:
            return
        try:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _advisory_key(name)})
            conn.commit()
        finally:
            conn.close()
