"""`reg models`: the registry's models with their recipe's metadata, filtered by label."""

from __future__ import annotations

from typing import Annotated

import typer

from reg_cli._common import open_registry, parse_labels, vref
from reg_cli.output import JsonOpt, Output

LabelOpt = Annotated[list[str] | None, typer.Option(
    "--label", "-l", metavar="KEY=VALUE",
    help="Only models with this label (recipe metadata.labels); several must all match.")]


def models(label: LabelOpt = None, json_mode: JsonOpt = False) -> None:
    """List models: versions, stages, owner, labels and description."""
    out = Output(json_mode)
    selector = parse_labels(label or [])
    with open_registry() as reg:
        rows = reg.list_models(labels=selector or None)
    out.data([m.model_dump(mode="json") for m in rows])
    out.table("Models", ["model", "versions", "latest", "stages", "owner", "labels",
                         "description"], [
        (m.name, m.versions, vref(m.latest),
         ", ".join(f"{s}={vref(n)}" for s, n in sorted(m.stages.items())), m.owner,
         ", ".join(f"{k}={v}" for k, v in sorted(m.labels.items())), m.description)
        for m in rows
    ])
    if rows:
        return
    if selector:
        out.hint("no model carries " + " and ".join(f"{k}={v}" for k, v in selector.items())
                 + "; `reg models` lists them all")
    else:
        out.hint("reg register ARTIFACT_DIR, or reg reconcile RECIPES_DIR")


def register(app: typer.Typer) -> None:
    app.command()(models)
