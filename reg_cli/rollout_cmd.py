"""`reg rollout`: start a progressive rollout, follow it, steer it, read its history, run it.

Thin: parse, call the canary controller (:mod:`rollout.canary.controller`), render. A
rollout's plan is the version's recipe's ``deploy.rollout`` with the flags given over it
(else :class:`~recipes.schema.RolloutSpec`'s defaults), validated by ``RolloutSpec``
before anything is written. Every change goes through ``RolloutCommands``, so it is an
audit event with who did it and why. The controller's passes run inside `reg serve`, or
alone with `reg rollout run` (Prometheus for the metrics, the gateway for the identity
check).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reg_cli._common import (
    ArgumentError,
    ModelOpt,
    ReasonOpt,
    open_registry,
    split_args,
    ts,
    vref,
)
from reg_cli.output import JsonOpt, Output, console

if TYPE_CHECKING:
    from rich.console import RenderableType

    from recipes.schema import RolloutSpec
    from registry.api import Registry
    from registry.rollouts import RolloutPublic
    from registry.tables import VersionPublic
    from rollout.canary.controller import RolloutCommands
    from rollout.canary.decide import Command

rollout_app = typer.Typer(
    help="Progressive rollouts: the canary against production, judged by a sequential test.",
    no_args_is_help=True,
)

# The flag that sets each RolloutSpec field, so a bad value is reported as the user wrote it.
FLAGS = {"steps": "--steps", "interval": "--interval", "min_requests": "--min-requests",
         "max_error_rate": "--max-error-rate", "max_latency_ratio": "--max-latency-ratio",
         "failure_limit": "--failure-limit", "on_inconclusive": "--on-inconclusive",
         "approval": "--approval", "alpha": "--alpha"}
STEPS_EXAMPLE = "5,25,50,100"
_STYLE = {"succeeded": "green", "rolled_back": "red", "aborted": "yellow", "paused": "yellow",
          "awaiting_approval": "cyan", "progressing": "cyan", "verifying": "cyan",
          "pending": "dim"}
_VERDICT_STYLE = {"Successful": "green", "Failed": "red", "Inconclusive": "yellow"}


# -- the plan: the recipe's deploy.rollout, the flags over it, RolloutSpec judging -------------


def parse_steps(text: str) -> list[dict[str, int]]:
    """``"10,50,100"`` -> ``[{"weight": 10}, {"weight": 50}, {"weight": 100}]``."""
    parts = [p.strip().removesuffix("%") for p in text.split(",")]
    try:
        return [{"weight": int(p)} for p in parts]
    except ValueError:
        raise ArgumentError(f"--steps {text!r}: not a list of whole percentages",
                            hint=f"e.g. --steps {STEPS_EXAMPLE} (canary weights, increasing)"
                            ) from None


def recipe_rollout(version: VersionPublic) -> dict[str, Any] | None:
    """The ``deploy.rollout`` of the recipe the version was trained from, if it has one."""
    from recipes.loading.validate import recipe_from_text

    recipe = recipe_from_text(version.recipe_text, f"<recipe of {version.ref}>")
    rollout = None if recipe is None else recipe.spec.deploy.rollout
    return None if rollout is None else rollout.model_dump(mode="json")


def rollout_plan(base: Mapping[str, Any] | None, flags: Mapping[str, Any], *,
                 source: str) -> RolloutSpec:
    """``base`` (a recipe's ``deploy.rollout``) with the flags given over it, validated.

    A bad value is an error naming the flag (or the recipe field, ``source``) and a fix.
    """
    from pydantic import ValidationError

    from recipes.schema import RolloutSpec

    given = {k: v for k, v in flags.items() if v is not None}
    plan = {**(base or {}), **given}
    try:
        return RolloutSpec.model_validate(plan)
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "steps"
        where = FLAGS.get(field, field) if field in given or base is None else (
            f"deploy.rollout.{field} in {source}")
        if err["type"] == "missing":
            raise ArgumentError(f"{source} has no deploy.rollout, so {where} must be given",
                                hint=f"e.g. {where} {STEPS_EXAMPLE}, or add deploy.rollout "
                                "to the recipe") from None
        value = flags.get(field) if field in given else plan.get(field)
        shown = (",".join(str(s["weight"]) for s in value or []) if field == "steps"
                 else value)
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ArgumentError(f"{where} {shown!r}: {message}",
                            hint=_option_hint(field, FLAGS.get(field, field))) from None


def _option_hint(field: str, flag: str) -> str:
    from recipes.schema import RolloutSpec

    info = RolloutSpec.model_fields.get(field)
    if info is None:
        return "`reg rollout start --help` lists the options"
    example = STEPS_EXAMPLE if field == "steps" else info.default
    if isinstance(example, bool):
        return f"{info.description} (--approval or --no-approval)"
    return f"{info.description} e.g. {flag} {example}"


def plan_summary(spec: RolloutSpec) -> str:
    steps = "/".join(str(s.weight) for s in spec.steps)
    return (f"steps {steps}%, interval {spec.interval}, at least {spec.min_requests} requests "
            f"a side, error rate <= {spec.max_error_rate:g}, latency ratio <= "
            f"{spec.max_latency_ratio:g}, failure limit {spec.failure_limit}, inconclusive: "
            f"{spec.on_inconclusive}" + (", approval before the last step" if spec.approval
                                         else ""))


def _commands(reg: Registry) -> RolloutCommands:
    from rollout.canary.controller import RolloutCommands

    return RolloutCommands(reg)


@rollout_app.command("start")
def start(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] VERSION",
                                              help="e.g. `v2` or `support-bot v2`.")],
    steps: Annotated[str | None, typer.Option(
        help=f"Canary weights in percent, increasing, e.g. {STEPS_EXAMPLE}.")] = None,
    interval: Annotated[str | None, typer.Option(
        help="Longest a step waits for a verdict, e.g. 10s.")] = None,
    min_requests: Annotated[int | None, typer.Option(
        help="Requests per side before any verdict.")] = None,
    max_error_rate: Annotated[float | None, typer.Option(
        help="The canary's error-rate ceiling (0 to 1).")] = None,
    max_latency_ratio: Annotated[float | None, typer.Option(
        help="Largest canary/baseline ratio of p95 latency and time to first token.")] = None,
    failure_limit: Annotated[int | None, typer.Option(
        help="Failed analyses before rolling back.")] = None,
    on_inconclusive: Annotated[str | None, typer.Option(
        help="pause or rollback, when a step ends without enough evidence.")] = None,
    approval: Annotated[bool | None, typer.Option(
        "--approval/--no-approval",
        help="Wait for `reg rollout promote` before the last step.")] = None,
    alpha: Annotated[float | None, typer.Option(
        help="Chance of rolling back a candidate as good as production.")] = None,
    reason: ReasonOpt = "",
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Start rolling VERSION out against production (supersedes another active rollout).

    Options default to the version's recipe's deploy.rollout, else to the recipe
    schema's defaults.
    """
    from registry.settings import default_actor

    out = Output(json_mode)
    name, (ref,) = split_args(args, ["VERSION"], model)
    flags = {"steps": parse_steps(steps) if steps is not None else None, "interval": interval,
             "min_requests": min_requests, "max_error_rate": max_error_rate,
             "max_latency_ratio": max_latency_ratio, "failure_limit": failure_limit,
             "on_inconclusive": on_inconclusive, "approval": approval, "alpha": alpha}
    with open_registry() as reg:
        v = reg.resolve(name, ref)
        spec = rollout_plan(recipe_rollout(v), flags, source=f"the recipe of {v.ref}")
        before = reg.list_rollouts(v.model, active=True)
        row = _commands(reg).start(v.model, v.number, spec, origin="manual",
                                   actor=default_actor(), reason=reason)
    out.data(rollout_json(row))
    was = before[0] if before else None
    if was is not None and was.id == row.id:
        out.message(f"{v.ref} is already rolling out (rollout {row.id}, {row.phase}); "
                    "nothing started.")
    else:
        if was is not None:
            out.message(f"[yellow]Superseded[/yellow] rollout {was.id} of {vref(was.candidate)}.")
        out.message(f"[green]Rollout {row.id} of {v.ref} against production "
                    f"{vref(row.baseline)} started[/green]: {plan_summary(spec)}.")
    out.hint(f"`reg rollout status {v.model} --watch` follows it (the controller runs in "
             "`reg serve`, or `reg rollout run`)")


# -- status ----------------------------------------------------------------------------------


def rollout_json(row: RolloutPublic) -> dict[str, Any]:
    """A rollout for --json: every stored field, with the step as people count it."""
    return {**row.model_dump(mode="json"), "steps": len(row.plan.get("steps", [])),
            "step_number": row.step + 1}


def _pick(reg: Registry, model: str) -> RolloutPublic:
    """The model's active rollout, else its newest."""
    from registry.errors import NotFound

    rows = reg.list_rollouts(model, active=True) or reg.list_rollouts(model, limit=1)
    if not rows:
        raise NotFound(f"{model} has no rollouts yet",
                       hint=f"`reg rollout start {model} VERSION` begins one")
    return rows[0]


def _status_lines(row: RolloutPublic, now: float) -> list[str]:
    """The status's lines above the checks, in rich markup."""
    from rich.markup import escape

    style = _STYLE.get(row.phase, "")
    n = len(row.plan.get("steps", []))
    lines = [f"[bold]{row.model}[/bold]: rollout {row.id} of [bold]{vref(row.candidate)}"
             f"[/bold] (candidate) against production {vref(row.baseline)} (baseline): "
             f"[{style}]{row.phase}[/{style}]",
             f"step {row.step + 1}/{n}, canary weight {row.weight}%, {row.failures} failed "
             f"analysis(es); started {ts(row.started_at)} by {escape(row.actor)} "
             f"({row.origin})"]
    if row.active:
        lines.append(f"this step's window: {max(0.0, now - row.step_started_at.timestamp()):.0f}"
                     f"s of {row.plan.get('interval', '?')}")
    else:
        lines.append(f"ended {ts(row.ended_at)}")
    if row.reason:
        lines.append(f"why: {escape(row.reason)}")
    return lines


CHECK_COLUMNS = ("check", "verdict", "value", "limit", "canary n", "baseline n", "p-value",
                 "detail")


def _check_rows(row: RolloutPublic) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for a in row.analysis:
        verdict = str(a.get("verdict", ""))
        style = _VERDICT_STYLE.get(verdict, "")
        value = a.get("value")
        rows.append((str(a.get("name", "?")), f"[{style}]{verdict}[/{style}]",
                     "n/a" if value is None else f"{value:.4g}", f"{a.get('limit', 0):g}",
                     str(a.get("canary_n", "")), str(a.get("baseline_n", "")),
                     f"{a.get('p_value', 1.0):.3g}", str(a.get("detail", ""))))
    return rows


def status_view(row: RolloutPublic, now: float) -> RenderableType:
    """The status as one rich renderable: what `--watch` redraws in place."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Checks (latest analysis)", title_justify="left")
    for c in CHECK_COLUMNS:
        table.add_column(c)
    checks = _check_rows(row)
    for r in checks:
        table.add_row(*r[:-1], escape(r[-1]))
    parts: list[RenderableType] = [Text.from_markup(line) for line in _status_lines(row, now)]
    parts.append(table if checks else Text("no analysis yet", style="dim"))
    return Group(*parts)


def _next_step(row: RolloutPublic) -> str:
    m = row.model
    if row.phase == "paused":
        return f"`reg rollout resume {m}` analyses again; `promote` or `abort` end it"
    if row.phase == "awaiting_approval":
        return f"`reg rollout promote {m}` (or `resume`) lets it take the last step"
    if row.active:
        return (f"`reg rollout status {m} --watch` follows it; `reg rollout pause|abort {m}` "
                "steers it")
    return f"`reg rollout history {m}` lists every rollout; `reg history {m}` the stages"


@rollout_app.command("status")
def status(
    model_arg: Annotated[str | None, typer.Argument(metavar="[MODEL]")] = None,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Redraw every second until the rollout ends; exit 1 unless it "
        "succeeded (with --json: print it once it ended).")] = False,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Where the model's rollout is: phase, step, weight, and each check's verdict and values."""
    out = Output(json_mode)
    with open_registry() as reg:
        name = reg.resolve_model(model_arg or model)
        row = _pick(reg, name)
        if watch:
            row = _watch(reg, row, out)
    out.data(rollout_json(row))
    if not watch and not json_mode:
        console.print(status_view(row, time.time()))
    out.hint(_next_step(row))
    if watch and row.phase != "succeeded":
        raise typer.Exit(1)


def _watch(reg: Registry, row: RolloutPublic, out: Output) -> RolloutPublic:
    """Redraw the status in place until the rollout ends; returns its final state."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if out.json_mode:
            while row.active and not stop.wait(1.0):
                row = reg.get_rollout(row.id)
            return row
        from rich.live import Live

        with Live(status_view(row, time.time()), console=console, refresh_per_second=4,
                  transient=False) as live:
            while row.active and not stop.wait(1.0):
                row = reg.get_rollout(row.id)
                live.update(status_view(row, time.time()))
        return row
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- a person's commands ---------------------------------------------------------------------

_HINTS = {
    "pause": "`reg rollout resume {m}` analyses again; `reg rollout abort {m}` rolls back",
    "resume": "`reg rollout status {m} --watch` follows it",
    "promote": "`reg history {m}` shows production's change",
    "abort": "`reg rollout history {m}` lists every rollout and why it ended",
}


def _command(command: Command, model_arg: str | None, model: str | None, reason: str,
             json_mode: bool) -> None:
    from rich.markup import escape

    from registry.settings import default_actor

    out = Output(json_mode)
    with open_registry() as reg:
        name = reg.resolve_model(model_arg or model)
        row = _commands(reg).command(name, command, actor=default_actor(), reason=reason)
    out.data(rollout_json(row))
    style = _STYLE.get(row.phase, "")
    out.message(f"{row.model} rollout {row.id} of {vref(row.candidate)}: "
                f"[{style}]{row.phase}[/{style}] (canary weight {row.weight}%) - "
                f"{escape(row.reason)}")
    out.hint(_HINTS[command.value].format(m=row.model))


ModelArg = Annotated[str | None, typer.Argument(metavar="[MODEL]")]


def _command_route(name: str, doc: str) -> None:
    """Register ``reg rollout NAME``: one of a person's commands on the active rollout."""

    def route(model_arg: ModelArg = None, reason: ReasonOpt = "", model: ModelOpt = None,
              json_mode: JsonOpt = False) -> None:
        from rollout.canary.decide import Command

        _command(Command(name), model_arg, model, reason, json_mode)

    route.__doc__ = doc
    rollout_app.command(name)(route)


for _name, _doc in (
    ("pause", "Hold the rollout at its weight; the analysis stops moving it."),
    ("resume", "Continue a paused rollout (a fresh analysis window), or approve the last "
               "step."),
    ("promote", "Skip the remaining steps: production -> the candidate now."),
    ("abort", "Roll back now: canary weight 0, the canary stage back to what it held."),
):
    _command_route(_name, _doc)


# -- history ---------------------------------------------------------------------------------


@rollout_app.command("history")
def history(
    model_arg: ModelArg = None,
    limit: Annotated[int, typer.Option(help="Newest N rollouts.")] = 50,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Every rollout of the model, newest first: outcome, who started it and why it ended."""
    out = Output(json_mode)
    with open_registry() as reg:
        name = reg.resolve_model(model_arg or model)
        rows = reg.list_rollouts(name, limit=limit)
    out.data([rollout_json(r) for r in rows])
    out.table(f"Rollouts of {name}", ["#", "version", "against", "outcome", "step", "origin",
                                      "by", "started", "ended", "why"], [
        (r.id, vref(r.candidate), vref(r.baseline),
         f"[{_STYLE.get(r.phase, '')}]{r.phase}[/{_STYLE.get(r.phase, '')}]",
         f"{r.step + 1}/{len(r.plan.get('steps', []))}", r.origin, r.actor, ts(r.started_at),
         ts(r.ended_at), r.reason) for r in rows
    ])
    out.hint(f"`reg rollout start {name} VERSION` begins one" if not rows else
             f"`reg events --model {name}` has every step with its analysis values")


def register(app: typer.Typer) -> None:
    """Add `reg rollout ...` to the `reg` app."""
    from reg_cli import rollout_run

    rollout_app.command("run")(rollout_run.run)
    app.add_typer(rollout_app, name="rollout")
