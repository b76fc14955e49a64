"""What the reliability suite measured (trials, seeds, requests, faults, inputs), gathered
while the tests run and printed in one summary at the end of the session, so the README can
quote figures a run actually produced. ``tests/conftest.py`` prints them and writes them to
``$REG_TEST_ARTIFACTS/reliability.json``.

A test records a figure only after the check it describes passed, so a figure in the summary
is one that held: ``record("crash", "reconciler SIGKILL trials", 12, "trials, 0 lost")``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    suite: str
    measure: str
    value: int | float | str
    unit: str = ""

    def shown(self) -> str:
        value = f"{self.value:.3g}" if isinstance(self.value, float) else str(self.value)
        return f"{value} {self.unit}".strip()


_FIGURES: list[Figure] = []


def record(suite: str, measure: str, value: int | float | str, unit: str = "") -> None:
    """Keep one figure for the end-of-run summary (same suite and measure: the last wins)."""
    _FIGURES[:] = [f for f in _FIGURES if (f.suite, f.measure) != (suite, measure)]
    _FIGURES.append(Figure(suite, measure, value, unit))


def recorded() -> list[Figure]:
    return sorted(_FIGURES, key=lambda f: (f.suite, f.measure))


def summary_lines(figures: list[Figure]) -> list[str]:
    """One aligned line per figure, grouped by suite."""
    if not figures:
        return []
    width = max(len(f.measure) for f in figures)
    lines: list[str] = []
    suite = None
    for f in figures:
        if f.suite != suite:
            suite = f.suite
            lines.append(f"{suite}:")
        lines.append(f"  {f.measure:<{width}}  {f.shown()}")
    return lines


def write_json(figures: list[Figure], path: Path) -> None:
    path.write_text(json.dumps([asdict(f) for f in figures], indent=2) + "\n")
