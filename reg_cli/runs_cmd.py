"""`reg runs`: training runs, newest first (`reg logs RUN` shows one: reconcile_cmd)."""

from __future__ import annotations

from typing import Annotated

import typer

from reg_cli._common import ModelOpt, open_registry, ts, vref
from reg_cli.output import JsonOpt, Output
from registry.runs import RunStatus


def runs(
    model: ModelOpt = None,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs in this status.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N runs.")] = 50,
    json_mode: JsonOpt = False,
) -> None:
    """Training runs, newest first."""
    out = Output(json_mode)
    with open_registry() as reg:
        rows = reg.list_runs(model=model, status=status, limit=limit)
    out.data([r.model_dump(mode="json") for r in rows])
    out.table("Runs", ["run", "model", "status", "phase", "attempts", "version", "spec hash",
                       "updated", "error"], [
        (r.id, r.model, r.status, r.phase, r.attempts, vref(r.version_number),
         r.spec_hash.removeprefix("sha256:")[:12], ts(r.updated_at), r.error[:60])
        for r in rows
    ])


def register(app: typer.Typer) -> None:
    app.command()(runs)
