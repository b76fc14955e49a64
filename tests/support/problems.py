"""Helpers for tests of recipe problems (file, line, field)."""

from __future__ import annotations

from pathlib import Path

from recipes.core.errors import Problem


def only(problems: list[Problem]) -> Problem:
    """The one problem reported; fails listing them all otherwise."""
    assert len(problems) == 1, [p.render() for p in problems]
    return problems[0]


def line_of(path: Path, needle: str) -> int:
    """The 1-based number of the first line of ``path`` holding ``needle``."""
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in {path}")
