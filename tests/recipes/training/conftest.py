"""Fixtures for training tests: the example workspace and recipes derived from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recipes.loading.loader import LoadedRecipe, load_recipe
from tests.support.factories import LoadedRecipeFactory


@pytest.fixture
def workspace(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """The example workspace of `reg init --example`, with the session's tiny model."""
    from recipes.scaffold.example import init_workspace

    return init_workspace(tmp_path / "ws", example=True, model_from=tiny_model_dir)


def _set(doc: Any, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        if k not in doc or doc[k] is None:
            doc[k] = {}
        doc = doc[k]
    if value is None:
        doc.pop(keys[-1], None)
    else:
        doc[keys[-1]] = value


@pytest.fixture
def make_recipe(workspace: Path) -> LoadedRecipeFactory:
    """Write a recipe derived from an example one, with dotted-path overrides, and load it.

    ``make_recipe("support-bot", name="x", **{"spec.training.max_steps": 5})``;
    a value of None removes the key.
    """
    return _recipe_maker(workspace)


@pytest.fixture(scope="module")
def module_workspace(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """An example workspace shared by one test module's tests (runs trained once, checked
    by several tests)."""
    from recipes.scaffold.example import init_workspace

    return init_workspace(tmp_path_factory.mktemp("ws") / "ws", example=True,
                          model_from=tiny_model_dir)


@pytest.fixture(scope="module")
def make_module_recipe(module_workspace: Path) -> LoadedRecipeFactory:
    """``make_recipe`` in the module's shared workspace."""
    return _recipe_maker(module_workspace)


def _recipe_maker(workspace: Path) -> LoadedRecipeFactory:
    from ruamel.yaml import YAML

    def make(template: str, name: str | None = None, **overrides: Any) -> LoadedRecipe:
        yaml = YAML()
        doc = yaml.load((workspace / "recipes" / f"{template}.yaml").read_text())
        name = name or template
        doc["metadata"]["name"] = name
        for dotted, value in overrides.items():
            _set(doc, dotted, value)
        path = workspace / "recipes" / f"{name}.yaml"
        with path.open("w") as f:
            yaml.dump(doc, f)
        return load_recipe(path)

    return make
