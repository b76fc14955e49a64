"""Stages: point one at a version (promote), step it back (rollback), read its timeline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from recipes.core.names import CANARY, PRODUCTION
from reg_cli._common import ModelOpt, ReasonOpt, open_registry, parse_time, split_args, ts, vref
from reg_cli.output import JsonOpt, Output

if TYPE_CHECKING:
    from registry.api import StageResult


def _stage_message(out: Output, r: StageResult) -> None:
    frm, to = ("none" if n is None else f"v{n}" for n in (r.from_version, r.to_version))
    out.data({"model": r.model, "stage": r.stage, "action": r.action.value, "from": r.from_version,
              "to": r.to_version, "changed": r.changed, "forced": r.forced, "event": r.event_id,
              "warnings": list(r.warnings)})
    for warning in r.warnings:
        out.message(f"[yellow]Warning:[/yellow] {warning}")
    if not r.changed:
        out.message(f"{r.model} {r.stage} already points at {to}; nothing changed.")
        return
    forced = " [yellow](forced)[/yellow]" if r.forced else ""
    out.message(f"[green]{r.model} {r.stage}: {frm} -> {to}[/green]{forced}")


def promote(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] VERSION STAGE",
                                              help="e.g. `v2 production` or `bot@v2 production`.")],
    reason: ReasonOpt = "",
    force: Annotated[bool, typer.Option(
        help="Promote a version that failed its gates, or beyond the engine's adapter "
        "slots (recorded).")] = False,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Point a stage (production, staging, canary, ...) at a version."""
    out = Output(json_mode)
    name, (version, stage) = split_args(args, ["VERSION", "STAGE"], model)
    with open_registry() as reg:
        r = reg.promote(name, version, stage, reason=reason, force=force)
    _stage_message(out, r)
    if r.changed:
        out.hint(f"reg history {r.model} (undo with `reg rollback {r.model} {r.stage}`)")


def rollback(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] STAGE")],
    reason: ReasonOpt = "",
    force: Annotated[bool, typer.Option(
        help="Roll back even beyond the engine's adapter slots (recorded).")] = False,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Point a stage back at the version it held before its last change."""
    out = Output(json_mode)
    name, (stage,) = split_args(args, ["STAGE"], model)
    with open_registry() as reg:
        r = reg.rollback(name, stage, reason=reason, force=force)
    _stage_message(out, r)
    out.hint(f"reg history {r.model} --stage {r.stage}")


def history(
    model_arg: Annotated[str | None, typer.Argument(metavar="[MODEL]")] = None,
    stage: Annotated[str | None, typer.Option("--stage", "-s", help="One stage only.")] = None,
    at: Annotated[str | None, typer.Option(
        help="Show what each stage pointed at at this time: ISO 8601 (UTC if no zone) or a "
        "time ago (30s, 15m, 1h, 2d).")] = None,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """The stage timeline: every promote and rollback, and each rollout's steps, who, when,
    why."""
    out = Output(json_mode)
    when = parse_time(at) if at else None
    with open_registry() as reg:
        name = reg.resolve_model(model_arg or model)
        events = reg.history(name, stage=stage, at=when)
        pointers = reg.stages_at(name, when) if when else {
            s: v.number for s, v in reg.stage_map(name).items()}
        # A rollout moves the canary and production: its steps belong to their timeline.
        rollouts = [] if stage not in (None, CANARY, PRODUCTION) else [
            e for e in reg.events(model=name)
            if e.kind.startswith("rollout.") and (when is None or e.at <= when)]
    if stage is not None:
        pointers = {k: v for k, v in pointers.items() if k == stage}
    out.data({"model": name, "at": None if when is None else when.isoformat(),
              "events": [e.model_dump(mode="json") for e in events], "stages": pointers,
              "rollout_events": [e.model_dump(mode="json") for e in rollouts]})
    out.table(f"Stage history of {name}" + (f" up to {ts(when)}" if when else ""),
              ["#", "time", "stage", "action", "change", "actor", "reason"], [
        (e.id, ts(e.at), e.stage, e.action + (" (forced)" if e.forced else ""),
         f"{vref(e.from_version)} -> {vref(e.to_version)}", e.actor, e.reason) for e in events
    ])
    if rollouts:
        out.table("Rollout steps", ["#", "time", "event", "version", "weight", "actor", "why"], [
            (e.id, ts(e.at), e.kind.removeprefix("rollout."), vref(e.version),
             "" if e.data.get("weight") is None else f"{e.data['weight']}%", e.actor, e.message)
            for e in rollouts])
    out.table("Stages" + (f" at {ts(when)}" if when else " now"), ["stage", "version"],
              [(s, vref(n)) for s, n in sorted(pointers.items())])


def register(app: typer.Typer) -> None:
    app.command()(promote)
    app.command()(rollback)
    app.command()(history)
