"""The registry's change feed: PostgreSQL's LISTEN/NOTIFY, heard by a reader at commit."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
import sqlalchemy as sa

from registry import events as audit
from registry.api import Registry
from registry.changes import CHANNEL, PostgresChangeFeed, listen_url
from registry.settings import Settings

WAIT_S = 30.0  # far longer than a notification takes; a wait that times out is a failure


def test_sqlite_has_no_feed_and_readers_poll(settings: Settings) -> None:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("the PostgreSQL half is the tests below")
    with Registry(settings) as reg:
        assert reg.change_feed() is None


@pytest.fixture
def pg(settings: Settings) -> Settings:
    if settings.database_url.startswith("sqlite"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    return settings


def test_a_committed_change_wakes_the_feed_and_quiet_does_not(pg: Settings) -> None:
    with Registry(pg) as writer, Registry(pg) as reader:
        feed = reader.change_feed()
        assert isinstance(feed, PostgresChangeFeed)
        try:
            # The first wait opens the session: nothing was heard before it, so it says read.
            assert feed.wait(0.01) is True
            assert feed.wait(0.3) is False
            writer.record_event("test.change", actor="tester", message="one")
            assert feed.wait(WAIT_S) is True
            assert feed.wait(0.3) is False  # heard once, not again
            # Several events in one transaction: one notification, one read.
            with writer._write() as s:
                for n in range(3):
                    audit.record(s, kind="test.change", at=writer.clock(), actor="tester",
                                 message=str(n))
            assert feed.wait(WAIT_S) is True
            assert feed.wait(0.3) is False
        finally:
            feed.close()


def test_a_rolled_back_change_is_not_heard(pg: Settings) -> None:
    with Registry(pg) as writer, Registry(pg) as reader:
        feed = reader.change_feed()
        assert feed is not None
        try:
            feed.wait(0.01)
            with pytest.raises(RuntimeError, match="abandoned"), writer._write() as s:
                audit.record(s, kind="test.change", at=writer.clock(), actor="tester")
                raise RuntimeError("abandoned")
            assert feed.wait(0.5) is False
            assert writer.change_marker() == 0  # and nothing was written
        finally:
            feed.close()


def test_a_dropped_listener_reconnects_and_says_read(pg: Settings) -> None:
    with Registry(pg) as writer, Registry(pg) as reader:
        feed = reader.change_feed()
        assert feed is not None
        try:
            feed.wait(0.01)
            with psycopg.connect(listen_url(pg.database_url), autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query = %s",
                    (f"LISTEN {CHANNEL}",)).fetchone()
            assert killed == (1,)
            # Changes may have committed while nobody listened: the wait says read...
            assert feed.wait(1.0) is True
            assert feed.wait(0.01) is True  # ...and again once it listens anew
            writer.record_event("test.change", actor="tester")
            assert feed.wait(WAIT_S) is True
        finally:
            feed.close()


def test_the_listen_url_is_libpq_with_its_options() -> None:
    url = listen_url("postgresql+psycopg://reg:s%40cret@db.example:5433/reg?sslmode=require")
    assert url == "postgresql://reg:s%40cret@db.example:5433/reg?sslmode=require"
    assert sa.make_url(url).password == "s@cret"


def test_close_ends_a_wait_in_another_thread_and_the_feed_stays_closed(pg: Settings) -> None:
    with Registry(pg) as reader:
        feed = reader.change_feed()
        assert feed is not None
        feed.wait(0.01)
        answers: list[bool] = []
        waiter = threading.Thread(target=lambda: answers.append(feed.wait(WAIT_S)))
        waiter.start()
        time.sleep(0.5)  # inside its wait (a close before it would also end it: False)
        feed.close()
        waiter.join(WAIT_S)
        assert not waiter.is_alive() and answers == [False]
        assert feed.wait(0.01) is False  # closed for good: no session reopened
