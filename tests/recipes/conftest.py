"""Fixtures for the recipe layer: the example workspace (with the real tiny model) and
a factory that writes variants of its recipes."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from recipes.scaffold.example import write_example_workspace
from tests.support.factories import RecipeFactory, RowsWriter


@pytest.fixture(scope="session")
def example_template(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example workspace, written once per session (its model copied, not rebuilt)."""
    root = tmp_path_factory.mktemp("example") / "ws"
    return write_example_workspace(root, model_from=tiny_model_dir)


@pytest.fixture
def workspace(example_template: Path, tmp_path: Path) -> Path:
    """A private copy of the example workspace, free to modify."""
    dest = tmp_path / "ws"
    shutil.copytree(example_template, dest)
    return dest


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = doc
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


_DELETE = object()


@pytest.fixture
def delete() -> object:
    """Pass as a value to ``write_recipe`` to remove a key."""
    return _DELETE


@pytest.fixture
def write_recipe(workspace: Path) -> RecipeFactory:
    """Write a variant of an example recipe: ``write_recipe("x", base="support-bot",
    **{"spec.training.max_steps": 5})``; dotted keys set values, ``delete`` removes them."""

    def make(name: str, *, base: str = "support-bot", **changes: Any) -> Path:
        yaml = YAML(typ="rt")
        doc = yaml.load((workspace / "recipes" / f"{base}.yaml").read_text())
        doc["metadata"]["name"] = name
        for dotted, value in changes.items():
            _set(doc, dotted, value)
        buf = io.StringIO()
        yaml.dump(doc, buf)
        path = workspace / "recipes" / f"{name}.yaml"
        path.write_text(buf.getvalue())
        return path

    return make


@pytest.fixture
def write_rows(workspace: Path) -> RowsWriter:
    """Write rows as JSON Lines to ``workspace/data/NAME``."""

    def make(name: str, rows: list[dict[str, Any]]) -> Path:
        path = workspace / "data" / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return make
