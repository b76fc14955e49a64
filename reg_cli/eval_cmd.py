"""`reg eval`: human evaluation, as blind sheets out (export) and filled sheets in (import)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reg_cli._common import ArgumentError, ModelOpt, open_registry
from reg_cli.output import JsonOpt, Output

if TYPE_CHECKING:
    from recipes.evaluation.human.results import HumanEvalResult

eval_app = typer.Typer(help="Human evaluation: blind A/B sheets for raters, and their verdict "
                       "stored with the version (a promotion gate: deploy.human_eval).",
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


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
