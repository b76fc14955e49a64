"""A validated recipe and where it came from, and the rule for paths written in a recipe.

Paths in a recipe are relative to the recipe's folder and must stay inside
its workspace (the folder above ``recipes/``, else the recipe's own folder)
or a root listed in ``$REG_ALLOWED_ROOTS``: a recipe must not read arbitrary files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# The schema's pydantic models are imported where a recipe is validated: a
# reconcile pass served from the loader's cache needs none of them.
if TYPE_CHECKING:
    from recipes.schema import Recipe

RECIPE_SUFFIXES = (".yaml", ".yml")
ALLOWED_ROOTS_ENV = "REG_ALLOWED_ROOTS"


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe plus where it came from."""

    recipe: Recipe
    path: Path
    text: str
    workspace: Path

    @property
    def name(self) -> str:
        return self.recipe.metadata.name

    def resolve(self, relative: str) -> Path:
        """A path written in the recipe, resolved against the recipe's folder.

        Raises ValueError when it escapes the workspace (and every root in
        ``$REG_ALLOWED_ROOTS``): a recipe must not read arbitrary files.
        """
        return resolve_inside(self.path.parent, relative, self.workspace)

    @property
    def base_model_ref(self) -> str:
        """The base model folder as written in the recipe."""
        return self.recipe.spec.base_model.path

    @property
    def base_model_path(self) -> Path:
        return self.resolve(self.base_model_ref)

    @property
    def promote_to(self) -> str | None:
        """The stage ``deploy.promote_to`` names, if any."""
        return self.recipe.spec.deploy.promote_to

    @property
    def rolls_out(self) -> bool:
        """Whether ``deploy.rollout`` asks for a progressive rollout of each new version."""
        return self.recipe.spec.deploy.rollout is not None

    def data_fields(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Every data file the recipe reads, with the field that names it, in a stable order.

        The one list of a recipe's data: the spec hash digests these files, the
        validator checks them and the reconciler watches them, so a new kind of
        data path is added here.
        """
        spec = self.recipe.spec
        fields: list[tuple[tuple[str | int, ...], str]] = [
            (("spec", "data", "sources", i, "path"), s.path)
            for i, s in enumerate(spec.data.sources)]
        if spec.data.replay is not None:
            fields.append((("spec", "data", "replay", "path"), spec.data.replay.path))
        if spec.evaluation.general is not None:
            fields.append((("spec", "evaluation", "general", "path"),
                           spec.evaluation.general.path))
        if spec.training.ewc is not None and spec.training.ewc.reference is not None:
            fields.append((("spec", "training", "ewc", "reference"),
                           spec.training.ewc.reference))
        return fields

    def data_refs(self) -> list[str]:
        """Every data file the recipe reads, as written in it (:meth:`data_fields`)."""
        return [rel for _, rel in self.data_fields()]

    def data_paths(self) -> list[Path]:
        """:meth:`data_refs`, resolved against the recipe's folder."""
        return [self.resolve(r) for r in self.data_refs()]


def allowed_roots(workspace: Path) -> list[Path]:
    roots = [workspace.resolve()]
    for part in os.environ.get(ALLOWED_ROOTS_ENV, "").split(os.pathsep):
        if part:
            roots.append(Path(part).resolve())
    return roots


def resolve_inside(base: Path, relative: str, workspace: Path) -> Path:
    target = (base / relative).resolve()
    roots = allowed_roots(workspace)
    if not any(target == r or target.is_relative_to(r) for r in roots):
        raise ValueError(
            f"path {relative!r} resolves to {target}, outside the workspace {roots[0]}; "
            f"keep data and models inside it or list the folder in ${ALLOWED_ROOTS_ENV}"
        )
    return target


def find_workspace(recipe_path: Path) -> Path:
    """The workspace a recipe belongs to: the folder above ``recipes/``, else its own folder."""
    parent = recipe_path.resolve().parent
    return parent.parent if parent.name == "recipes" else parent


def model_folder_problem(model_dir: Path) -> tuple[str, str] | None:
    """What is wrong with a base model folder, as (message, hint); None when it is usable:
    a folder with ``config.json`` and ``*.safetensors`` weights (no pickles are loaded)."""
    if not model_dir.is_dir():
        return (f"base model folder not found: {model_dir}",
                "point at a folder with config.json and *.safetensors "
                "(`reg init --example` builds a tiny one)")
    if not (model_dir / "config.json").is_file():
        return (f"not a model folder (no config.json): {model_dir}",
                "point at a Hugging Face model folder")
    if not any(model_dir.glob("*.safetensors")):
        return (f"no *.safetensors weights in {model_dir}",
                "reg loads safetensors only; convert pickle checkpoints first")
    return None
