"""`reg doctor`: the best-practice checklist over a workspace's recipes, data and registry.

Thin: gather the snapshot (:func:`registry.doctor.gather`), judge it
(:func:`registry.doctor.diagnose`) and render the findings, a table per recipe for people
or one JSON document for scripts. Exits 1 when an item fails, 0 with warnings only.
"""

from __future__ import annotations

import os
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reg_cli._common import open_registry
from reg_cli.output import JsonOpt, Output, console

if TYPE_CHECKING:
    from registry.doctor import Report

_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def render(report: Report) -> None:
    """The findings as rich tables, one per subject (recipe, then the workspace)."""
    from rich.markup import escape
    from rich.table import Table

    for subject, group in groupby(report.findings, key=lambda f: f.subject):
        t = Table(title=f"[bold]{escape(subject)}[/bold]", title_justify="left",
                  show_lines=False, header_style="bold")
        for column, ratio in (("", None), ("item", None), ("seen", 3), ("fix", 2)):
            t.add_column(column, ratio=ratio, overflow="fold")
        for f in group:
            style = _STYLE[f.status.value]
            t.add_row(f"[{style}]{f.status.value}[/{style}]", f.title, escape(f.detail),
                      escape(f.fix))
        console.print(t)
    c = report.counts
    console.print(f"[green]{c['pass']} passed[/green], [yellow]{c['warn']} warning(s)"
                  f"[/yellow], [red]{c['fail']} failed[/red]")


def doctor(
    recipes_dir: Annotated[Path, typer.Argument(
        metavar="[RECIPES_DIR]", help="Folder (or file) of the recipes to check.")
    ] = Path("recipes"),
    json_mode: JsonOpt = False,
) -> None:
    """The fine-tuning checklist on the real state of a workspace: examples and a held-out
    test split, cleaning, deduplication and PII redaction, a baseline against the base
    model, a general-capability gate, PEFT before full fine-tuning, the learning rate,
    checkpoints and early stopping, a rollout plan, a human evaluation, and Prometheus
    scraping ($REG_PROMETHEUS_URL). Each item passes, warns or fails with its fix; exit code 1 when
    one fails."""
    from registry.doctor import diagnose, gather
    from rollout.canary.prometheus import URL_ENV

    out = Output(json_mode)
    with open_registry() as reg:
        report = diagnose(gather(recipes_dir, reg, os.environ.get(URL_ENV)))
    out.data(report.to_json())
    if not json_mode:
        render(report)
        if report.exit_code:
            out.hint("fix the failed items, then run `reg doctor` again")
        elif report.counts["warn"]:
            out.hint("the warnings are worth a look; `reg plan` shows what reconcile trains")
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    app.command()(doctor)
