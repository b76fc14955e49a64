"""Recipe commands: validate, schema, init, data."""

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
    from recipes.errors import ValidationFailed
    from recipes.loader import check_recipes

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


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(schema)
