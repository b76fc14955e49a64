"""Commands of this noun are registered here (filled in by their issue)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `reg` app."""
