"""Fixtures for controller tests, beside the shared ones of tests/conftest.py (``settings`` on
SQLite and PostgreSQL, ``clock``, ``make_registry``): a SQLite-only registry for the cases
that need one file, and registries opened as a process opens them (real clock by default)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from registry.api import Registry
from registry.settings import Settings
from tests.support.factories import RegistryFactory


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings.for_home(tmp_path / "home")


@pytest.fixture
def open_registry() -> Iterator[RegistryFactory]:
    """``open_registry(settings, clock=None)``: ``Registry.open``, closed after the test."""
    opened: list[Registry] = []

    def make(settings: Settings, clock: Callable[[], datetime] | None = None) -> Registry:
        r = Registry.open(settings, clock=clock)
        opened.append(r)
        return r

    yield make
    for r in opened:
        r.close()
