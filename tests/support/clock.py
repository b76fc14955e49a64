"""Test helpers shared by more than one test folder: a fake clock, a session PostgreSQL.

Each folder's conftest keeps its own fixture names and defaults and calls these.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.services import service_missing, start_postgres


class FakeClock:
    """A clock the test moves; each reading advances 1 ms so events stay ordered."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class FakeMonotonic:
    """A monotonic clock in seconds (``time.monotonic``'s stand-in) the test moves."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def running_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Body of a session fixture: a real PostgreSQL server (its `postgres` database's URL).

    Skips, or fails under REG_REQUIRE_SERVICES=1, where PostgreSQL is not installed.
    """
    try:
        url, stop = start_postgres(tmp_path_factory.mktemp("pg"))
    except FileNotFoundError:
        service_missing("PostgreSQL")
        raise  # unreachable: service_missing skips or fails
    try:
        yield url
    finally:
        stop()
