"""`reg eval`: human evaluation, as blind sheets out (export) and filled sheets in (import);
re-evaluation of a served version through the gateway (run) and its stored runs (history)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reg_cli._common import ArgumentError, ModelOpt, open_registry, ts
from reg_cli.output import JsonOpt, Output

if TYPE_CHECKING:
    from recipes.evaluation.human.results import HumanEvalResult
    from registry.eval_runs import EvalRun

eval_app = typer.Typer(help="Human evaluation: blind A/B sheets for raters, and their verdict "
                       "stored with the version (a promotion gate: deploy.human_eval). "
                       "Re-evaluation: a served version measured again through the gateway, "
                       "a regression flagged against its registration metrics.",
                       no_args_is_help=True)

_VERSION_RE = re.compile(r"^(v?\d+|[a-z0-9-]+@v?\d+)$")
_USAGE = "[MODEL] VERSION [OTHER] OUT"


def split_export_args(args: list[str], model: str | None
                      ) -> tuple[str | None, str, str | None, str]:
    """``[MODEL] vA [vB] OUT``: with three arguments, a first one that is no version
    (``v2``, ``2``, ``bot@v2``) is the model."""
    if len(args) == 4:
        return args[0], args[1], args[2], args[3]
    if len(args) == 3:
        if _VERSION_RE.match(args[0]) and _VERSION_RE.match(args[1]):
            return model, args[0], args[1], args[2]
        return args[0], args[1], None, args[2]
    if len(args) == 2:
        return model, args[0], None, args[1]
    raise ArgumentError(f"expected {_USAGE}, got {len(args)} argument(s): "
                        f"{' '.join(args) or '-'}",
                        hint="e.g. `reg eval export support-bot v3 v2 eval-v3` (v3 against v2), "
                        "or `reg eval export v3 eval-v3` (v3 against its base model)")


@eval_app.command("export")
def export(
    args: Annotated[list[str], typer.Argument(metavar=_USAGE, help=(
        "The version to judge, the one to compare it with (omitted: its base model) and "
        "the folder to write."))],
    raters: Annotated[int, typer.Option(min=1, help="How many raters (one sheet each).")] = 3,
    examples: Annotated[int, typer.Option(
        min=1, help="Prompts from the version's recorded test split.")] = 50,
    seed: Annotated[int, typer.Option(help="Seeds the row order and the A/B sides.")] = 0,
    criteria: Annotated[str, typer.Option(
        help="Comma-separated criteria raters may score 1-5 per answer.")] =
        "helpfulness,accuracy",
    max_new_tokens: Annotated[int | None, typer.Option(
        min=1, help="Answer length bound (default: the recipe's evaluation.max_new_tokens)."
    )] = None,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Write blind A/B sheets (CSV and JSONL, one per rater) and their key."""
    out = Output(json_mode)
    name, first, second, dest = split_export_args(args, model)
    names = [c.strip() for c in criteria.split(",") if c.strip()]
    bad = [c for c in names if not re.fullmatch(r"[a-z][a-z0-9_]*", c)]
    if bad:
        raise ArgumentError(f"--criteria: {', '.join(map(repr, bad))} is not a plain name",
                            hint="lower-case words, e.g. --criteria helpfulness,accuracy")
    with open_registry() as reg:
        candidate = reg.resolve(name, first)
        other = None if second is None else reg.resolve(candidate.model, second)
        done = reg.export_human_eval(candidate, other, Path(dest).absolute(), raters=raters,
                                     examples=examples, seed=seed, criteria=names,
                                     max_new_tokens=max_new_tokens)
    against = "its base model" if other is None else other.ref
    out.data({"key": str(done.key), "sheets": [str(p) for p in done.sheets],
              "items": done.items, "raters": done.raters, "export": done.export_id,
              "candidate": candidate.ref, "other": None if other is None else other.ref,
              "seed": seed})
    out.message(f"[green]Wrote {done.raters} sheets[/green] of {done.items} items: "
                f"{candidate.ref} against {against}, A/B shuffled per row (seed {seed}).")
    out.message(f"Send {done.key.parent / 'sheets'} to the raters (each fills its own .csv "
                f"or .jsonl); keep {done.key} apart: it says which side is which.")
    out.hint(f"reg eval import {done.key} {done.key.parent / 'sheets'}/*.csv")


def _render(out: Output, r: HumanEvalResult) -> None:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    out.table(f"Human evaluation of {r.model}@v{r.candidate} against {r.other_label}",
              ["measure", "value"], [
                  ("win rate (ties left out)", f(r.win_rate)),
                  (f"{r.confidence:.0%} interval (Wilson)", f"{f(r.ci_low)} - {f(r.ci_high)}"),
                  ("p-value (binomial, vs 0.5)", f(r.p_value)),
                  ("items won / lost / tied", f"{r.wins} / {r.losses} / {r.ties}"),
                  ("Krippendorff's alpha (nominal)", f(r.alpha)),
                  ("raters / judgments / unrated", f"{len(r.raters)} / {r.judgments} / "
                                                   f"{r.unrated}"),
              ])
    if any(c.candidate_ratings or c.other_ratings for c in r.criteria):
        out.table("Criteria (mean 1-5)", ["criterion", f"v{r.candidate}", r.other_label,
                                          "ratings"], [
            (c.criterion, f(c.candidate_mean), f(c.other_mean),
             f"{c.candidate_ratings} / {c.other_ratings}") for c in r.criteria])


@eval_app.command("import")
def import_(
    key: Annotated[Path, typer.Argument(help="The key.json `reg eval export` wrote.")],
    sheets: Annotated[list[Path], typer.Argument(help="Filled sheets (.csv or .jsonl), one "
                                                 "per rater.")],
    json_mode: JsonOpt = False,
) -> None:
    """Read filled sheets: win rate with its interval, criteria, agreement; stored."""
    from recipes.evaluation.human.results import summarize
    from recipes.evaluation.human.sheets import (
        SheetError,
        check_against_key,
        read_key,
        read_sheet,
    )

    out = Output(json_mode)
    k = read_key(key)
    read = [read_sheet(p, k.criteria) for p in sheets]
    check_against_key(read, k, key)
    if not any(sh.judgments for sh in read):
        raise SheetError(f"no rated rows in {', '.join(p.name for p in sheets)}",
                         hint="fill the choice column (A, B or tie) of the rows, then import")
    result = summarize(k, read)
    with open_registry() as reg:
        stored = reg.record_human_eval(result)
    out.data(stored.model_dump(mode="json"))
    _render(out, stored)
    out.message(f"[green]Stored[/green] with {stored.model}@v{stored.candidate}: "
                f"{stored.describe()}")
    out.hint(f"reg show {stored.model}@v{stored.candidate}")


def _render_run(out: Output, r: EvalRun) -> None:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.4g}"

    when = ts(r.at)
    if r.error:
        out.message(f"[red]Re-evaluation of {r.model}@v{r.version} failed[/red] ({when}, "
                    f"{r.gateway}): {r.error}")
        return
    out.table(f"Re-evaluation of {r.model}@v{r.version} through {r.gateway} ({when}, "
              f"{r.requests} requests, tolerance {r.tolerance:g})",
              ["metric", "registered", "served now", "allowed", "verdict"],
              [(c.metric, f(c.registered), f(c.measured), f(c.allowed),
                "[red]REGRESSED[/red]" if c.regressed else
                ("ok" if c.allowed is not None else "no registration value"))
               for c in r.checks])
    if r.skipped:
        out.table("Registration metrics not measured through the gateway", ["metric", "why"],
                  sorted(r.skipped.items()))


@eval_app.command("run")
def run(
    target: Annotated[str, typer.Argument(
        metavar="MODEL[:STAGE|@vN]",
        help="The version: MODEL@vN, vN (with --model), MODEL:STAGE, or MODEL (its "
        "production version), resolved again at each run of --every.")],
    gateway: Annotated[str | None, typer.Option(
        envvar="REG_GATEWAY_URL", show_envvar=True,
        help="The gateway's address (default: where `reg serve` listens). The API key comes "
        "from $REG_API_KEY (else the first of $REG_API_KEYS).")] = None,
    tolerance: Annotated[float, typer.Option(
        min=0.0, help="How much worse than registered a metric may be: absolute for "
        "scores in [0, 1] (exact match, contains, ROUGE-L), relative for losses and "
        "perplexities.")] = 0.05,
    every: Annotated[str | None, typer.Option(
        help="Repeat every DURATION (e.g. 24h, 30m) until Ctrl-C.")] = None,
    recipe: Annotated[Path | None, typer.Option(
        help="The recipe file whose workspace holds the version's data, when the version "
        "records none.")] = None,
    losses: Annotated[bool, typer.Option(
        "--losses", help="Also measure the losses and perplexities, from the engine's prompt "
        "log-probabilities (completions with echo). vLLM 0.32 on CPU with LoRA fails its "
        "engine when such a request shares a batch with another: use on GPU engines, or "
        "with no other traffic.")] = False,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Re-evaluate a served version through the gateway on its recipe's test and general
    sets; store the run; exit 1 on a regression, 2 when it could not measure."""
    from recipes.core.durations import DURATION_HINT, duration_seconds
    from reg_cli import eval_run as er

    out = Output(json_mode)
    every_s = None if every is None else duration_seconds(every)
    if every is not None and (every_s is None or every_s <= 0):
        raise ArgumentError(f"--every {every!r} is not a duration", hint=DURATION_HINT)
    url = er.gateway_url(gateway)

    def once() -> int:
        with open_registry() as reg:
            v = er.resolve_target(reg, target, model)
            stored = er.evaluate_once(reg, v, gateway=url, tolerance=tolerance,
                                      recipe=recipe.absolute() if recipe else None, losses=losses)
        out.data(stored.model_dump(mode="json"))
        _render_run(out, stored)
        code = er.exit_code(stored)
        if code == er.EXIT_REGRESSED:
            out.message(f"[red]Regression[/red]: {', '.join(stored.regressed_metrics)} of "
                        f"{stored.model}@v{stored.version} worse than registered beyond "
                        f"{tolerance:g}; stored as run {stored.id}.")
        elif code == 0:
            out.message(f"[green]Stored[/green] run {stored.id}: {stored.describe()}.")
        else:
            out.hint(f"is the gateway at {url} up (`reg serve`), and does a stage point at "
                     f"{stored.model}@v{stored.version} (`reg versions {stored.model}`)?")
        return code

    if every_s is None:
        code = once()
        if code == 0:
            out.hint(f"reg eval history {target.split(':')[0]}")
        raise typer.Exit(code)
    out.message(f"Re-evaluating {target} every {every} (Ctrl-C ends it).")
    runs, code = er.watch(once, every_s, er.SystemClock())
    out.message(f"Stopped after {runs} run(s).")
    raise typer.Exit(0)


@eval_app.command("history")
def history(
    target: Annotated[str, typer.Argument(metavar="MODEL[@vN]",
                                          help="A model, or one of its versions.")],
    limit: Annotated[int, typer.Option(min=1, help="The newest this many runs.")] = 20,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Past re-evaluations (`reg eval run`), oldest first."""
    out = Output(json_mode)
    with open_registry() as reg:
        if "@" in target or target.lstrip("v").isdigit():
            v = reg.resolve(model, target)
            name, number = v.model, v.number
        else:
            name, number = reg.resolve_model(target), None
        runs = reg.eval_runs(name, number, limit=limit)
    out.data([r.model_dump(mode="json") for r in runs])
    out.table(f"Re-evaluations of {name}" + (f"@v{number}" if number else ""),
              ["run", "at", "version", "gateway", "verdict"],
              [(r.id, ts(r.at), f"v{r.version}", r.gateway, r.describe()) for r in runs])
    if not runs:
        out.message("No re-evaluation stored yet.")
        out.hint(f"reg eval run {name}:production")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
