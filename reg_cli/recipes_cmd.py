"""Recipe commands: validate, schema, init (`reg data` is reg_cli.data_cmd)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from reg_cli.output import JsonOpt, Output


def validate(
    paths: Annotated[list[Path], typer.Argument(help="Recipe files or directories.")],
    json_mode: JsonOpt = False,
) -> None:
    """Validate recipes: every problem of every file, with file:line:column and a fix."""
    from recipes.core.errors import ValidationFailed
    from recipes.loading.loader import check_recipes

    out = Output(json_mode)
    result = check_recipes(paths)
    out.data({
        "valid": [str(r.path) for r in result.recipes],
        "problems": [p.__dict__ for p in result.all_problems],
    })
    out.table("Recipes", ["model", "file", "method", "objective"], [
        (r.name, str(r.path), r.recipe.spec.adapter.method.value,
         r.recipe.spec.training.objective.value) for r in result.recipes
    ])
    if result.problems:
        if json_mode:
            raise typer.Exit(1)
        raise ValidationFailed(result.all_problems)
    out.message(f"[green]{len(result.recipes)} recipe(s) valid.[/green]")
    out.hint("`reg plan DIR` shows what `reg reconcile` would train")


def schema() -> None:
    """Print the recipe JSON Schema (for yaml-language-server and other editors)."""
    from recipes.schema import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


def init(
    directory: Annotated[Path, typer.Argument(help="Folder of the new workspace.")],
    example: Annotated[bool, typer.Option(
        "--example", help="Add example recipes, their data and a tiny model built here.",
    )] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Write into a folder that is not empty (replaces reg's files).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the generated data and model.")] = 0,
    json_mode: JsonOpt = False,
) -> None:
    """Create a workspace: recipes/, the recipe JSON Schema, and a .gitignore for .reg/."""
    from recipes.scaffold.example import init_workspace

    out = Output(json_mode)
    root = init_workspace(directory, example=example, force=force, seed=seed)
    recipes = sorted(str(p.relative_to(root)) for p in (root / "recipes").glob("*.yaml"))
    out.data({"workspace": str(root), "recipes": recipes, "example": example})
    out.message(f"[green]Workspace ready:[/green] {root}")
    if recipes:
        out.table(None, ["recipe"], [(r,) for r in recipes])
        out.hint(f"`reg validate {root / 'recipes'}`, then "
                 f"`reg data {root / 'recipes' / 'support-bot.yaml'}`")
    else:
        out.hint(f"write a recipe in {root / 'recipes'} (`reg schema` for the format), "
                 f"or start from `reg init DIR --example`")


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(schema)
    app.command()(init)
