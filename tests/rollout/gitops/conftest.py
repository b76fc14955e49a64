"""Fixtures for reconciler tests: a committed example workspace, real registries, a fake clock.

The workspace is the one `reg init --example` writes (recipes support-bot,
faq-bot, polite-dpo over generated data and the tiny Llama), committed to a
fresh git repository so lineage is recorded. Databases are real: a SQLite
file, or a database on a PostgreSQL server started once per session.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry.api import Registry
from registry.settings import Settings
from tests.support.cli import git
from tests.support.clock import FakeClock, running_postgres
from tests.support.factories import RegistryFactory, WorkspaceFactory
from tests.support.services import create_database

RECIPES = ("support-bot", "faq-bot", "polite-dpo")



@pytest.fixture(scope="session")
def example_template(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The example workspace, written once per session (copied per test)."""
    from recipes.scaffold.example import write_example_workspace

    return write_example_workspace(tmp_path_factory.mktemp("template") / "ws",
                                   model_from=tiny_model_dir)


@pytest.fixture
def workspace(tmp_path: Path, example_template: Path) -> WorkspaceFactory:
    """``workspace(keep=("support-bot",), edit={...})``: a committed copy of the example."""

    def make(keep: tuple[str, ...] = RECIPES, edit: dict[str, Callable[[str], str]] | None = None,
             name: str = "ws") -> Path:
        ws = tmp_path / name
        shutil.copytree(example_template, ws)
        for f in (ws / "recipes").glob("*.yaml"):
            if f.stem not in keep:
                f.unlink()
        for stem, change in (edit or {}).items():
            f = ws / "recipes" / f"{stem}.yaml"
            f.write_text(change(f.read_text()))
        git(ws, "init", "-q", "-b", "main")
        git(ws, "add", ".")
        git(ws, "commit", "-q", "-m", "example workspace")
        return ws

    return make


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_postgres(tmp_path_factory)


@pytest.fixture(params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Registry settings under ``tmp_path/home``: a SQLite file, or a fresh PostgreSQL database."""
    home = tmp_path / "home"
    if request.param == "sqlite":
        return Settings.for_home(home)
    url = create_database(request.getfixturevalue("postgres_server"))
    return Settings(home=home, database_url=url, artifact_store=str(home / "artifacts"))


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings.for_home(tmp_path / "home")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))  # starts at real time, as these tests always have


@pytest.fixture
def open_registry() -> Iterator[RegistryFactory]:
    opened: list[Registry] = []

    def make(settings: Settings, clock: Callable[[], datetime] | None = None) -> Registry:
        r = Registry.open(settings, clock=clock)
        opened.append(r)
        return r

    yield make
    for r in opened:
        r.close()
