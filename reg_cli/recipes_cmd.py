"""Recipe commands: validate, schema, init, data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

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


def data(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder for train/validation/test JSONL and data_report.json "
        "(default: WORKSPACE/.reg/data/NAME).",
    )] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Prepare a recipe's data (load, clean, redact, split, tokenize) and print the report."""
    from recipes.data.pipeline import load_base_tokenizer, prepare_data
    from recipes.data.write import default_data_dir
    from recipes.loading.loader import load_recipe

    output = Output(json_mode)
    loaded = load_recipe(recipe)
    out_dir = out if out is not None else default_data_dir(loaded.workspace, loaded.name)
    prepared = prepare_data(loaded, load_base_tokenizer(loaded), out_dir)
    report = prepared.report.to_json()
    output.data({**report, "out_dir": str(prepared.out_dir)})
    _render_report(output, report)
    output.message(f"[green]Prepared {loaded.name}[/green] ({prepared.kind}) -> {out_dir}")
    output.hint(f"inspect {out_dir / 'train.jsonl'}, then "
                f"`reg train {recipe} --out DIR` trains on it")


def _render_report(out: Output, report: dict[str, Any]) -> None:
    out.table(f"Sources of {report['recipe']}", ["source", "file", "format", "rows", "kept"], [
        (s["name"], s["path"], s["format"], s["rows"], s["kept"]) for s in report["sources"]
    ])
    cleaning = report["cleaning"]
    rows: list[tuple[str, str, object]] = [("rows read", "", cleaning["rows_in"])]
    rows += [("removed", reason, n) for reason, n in cleaning["removed"].items()]
    rows += [("modified", what, n) for what, n in cleaning["modified"].items()]
    rows += [("PII redacted", kind, n) for kind, n in cleaning["pii_redacted"].items()]
    out.table("Cleaning", ["step", "reason", "count"], rows)
    mix = report["mix"]
    if len(mix["before"]) > 1 or report["replay"]:
        mix_rows: list[tuple[str, object, object]] = [
            (task, n, mix["after"][task]) for task, n in mix["before"].items()]
        if report["replay"]:
            mix_rows.append(("replay", report["replay"]["usable"], report["replay"]["added"]))
        out.table(f"Training mix ({mix['strategy']})", ["task", "train rows", "after mixing"],
                  mix_rows)
    out.table(f"Splits (tokens, max_seq_length {report['max_seq_length']})",
              ["split", "rows", "tokens", "min", "mean", "p50", "p95", "max", "labels",
               "cut"],
              [(name, s["examples"], s["tokens"], s["min"], s["mean"], s["p50"], s["p95"],
                s["max"], "" if s["label_tokens"] is None else s["label_tokens"], s["truncated"])
               for name, s in report["splits"].items()])


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(schema)
    app.command()(init)
    app.command()(data)
