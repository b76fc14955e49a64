"""Types of the factory fixtures the conftest files provide, for the tests that take them.

The fixtures stay in each folder's conftest.py; tests import only these names, never from
a conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from recipes.loading.loader import LoadedRecipe
from registry.api import Registry

# write_recipe("x", base="support-bot", **{"spec.training.max_steps": 5}) -> the recipe's path
RecipeFactory = Callable[..., Path]
# make_recipe("support-bot", name="x", **{"spec.training.max_steps": 5}) -> the loaded recipe
LoadedRecipeFactory = Callable[..., LoadedRecipe]
# write_rows("extra.jsonl", [{...}, ...]) -> the data file's path
RowsWriter = Callable[[str, list[dict[str, Any]]], Path]
# make_artifact(name="support-bot", seed=1, ...) -> a training artifact folder
ArtifactFactory = Callable[..., Path]
# make_registry(...) -> an open Registry, closed after the test
RegistryFactory = Callable[..., Registry]
# workspace(commit=True, ...) -> a committed example workspace
WorkspaceFactory = Callable[..., Path]
