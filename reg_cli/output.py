"""All command output goes through here: rich for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

console = Console()
err_console = Console(stderr=True)


class Output:
    """One output object per command: ``table``/``message`` for people, ``data`` for --json."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode

    def data(self, obj: Any) -> None:
        """The command's result. In --json mode it is the only thing on stdout."""
        if self.json_mode:
            sys.stdout.write(json.dumps(obj, indent=2, default=str, sort_keys=False) + "\n")

    def table(
        self, title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        if self.json_mode:
            return
        t = Table(title=title, title_justify="left")
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*["" if v is None else str(v) for v in r])
        console.print(t)

    def message(self, text: str) -> None:
        if not self.json_mode:
            console.print(text)

    def hint(self, text: str) -> None:
        """A next step, shown to people only."""
        if not self.json_mode:
            console.print(f"[dim]Next: {text}[/dim]")
