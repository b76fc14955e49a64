"""Fixtures for reconciler tests: a committed example workspace (registries and the clock are
tests/rollout/conftest.py's).

The workspace is the one `reg init --example` writes (recipes support-bot,
faq-bot, polite-dpo over generated data and the tiny Llama), committed to a
fresh git repository so lineage is recorded.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import git
from tests.support.factories import WorkspaceFactory

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
