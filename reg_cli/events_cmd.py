"""`reg events`: the audit log, everything that changed state, who did it and why."""

from __future__ import annotations

from typing import Annotated

import typer

from reg_cli._common import ModelOpt, open_registry, parse_time, ts
from reg_cli.output import JsonOpt, Output


def events(
    since: Annotated[str | None, typer.Option(
        help="After this event id, or since a time: ISO 8601 or a time ago (30s, 15m, 1h, "
        "2d).")] = None,
    model: ModelOpt = None,
    limit: Annotated[int, typer.Option(help="Newest N events.")] = 100,
    json_mode: JsonOpt = False,
) -> None:
    """The audit log: everything that changed state, who did it and why."""
    out = Output(json_mode)
    since_id = int(since) if since and since.strip().isdigit() else None
    since_time = parse_time(since) if since and since_id is None else None
    with open_registry() as reg:
        rows = reg.events(since_id, since=since_time, model=model, limit=limit)
    out.data([e.model_dump(mode="json") for e in rows])
    out.table("Events", ["#", "time", "kind", "model", "actor", "message"], [
        (e.id, ts(e.at), e.kind, e.model or "", e.actor, e.message) for e in rows
    ])


def register(app: typer.Typer) -> None:
    app.command()(events)
