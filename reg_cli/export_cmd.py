"""`reg export`: a version's adapter as stored, or merged into its base model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reg_cli._common import ModelOpt, open_registry, split_args
from reg_cli.output import JsonOpt, Output


def export(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] VERSION OUT")],
    merged: Annotated[bool, typer.Option(help="Merge the adapter into the base model and save "
                                         "a full safetensors model.")] = False,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Copy a version's adapter to OUT, or (--merged) a full model with the adapter merged in."""
    from registry.export import export_version  # torch and peft only with --merged, inside

    out = Output(json_mode)
    name, (version, dest) = split_args(args, ["VERSION", "OUT"], model)
    with open_registry() as reg:
        v = reg.resolve(name, version)
        path = export_version(reg, v, Path(dest), merged=merged)
    out.data({"version": v.ref, "out": str(path), "merged": merged})
    out.message(f"[green]Exported {v.ref}[/green] to {path}" + (" (merged)" if merged else ""))


def register(app: typer.Typer) -> None:
    app.command()(export)
