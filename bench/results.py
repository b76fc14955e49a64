"""One result shape for every benchmark under bench/, written and read here only.

1. A benchmark builds :class:`Measure` values with :func:`measure` (or :func:`skipped`):
   reg's figure, the reference measured in the same run, their ratio, the goal as a
   comparison (``">= 0.95x"`` on the ratio, ``"<= 50 ms"`` on the figure), and the
   verdict, decided once here by :meth:`Goal.holds`.
2. It adds curves (:class:`Curve`) for the plots, and writes one :class:`BenchReport` to
   the path given by ``--json`` (:func:`add_arguments`, :meth:`BenchReport.write`).
3. ``bench/run.py`` reads every report back with :meth:`BenchReport.read`, adds the
   machine and each process's outcome (:class:`RunResults`, bench/results.json) and renders
   the table and the plots.
"""

from __future__ import annotations

import argparse
import math
import re
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict


class Verdict(StrEnum):
    """What a measure says about its goal."""

    passed = "pass"  # the goal holds
    failed = "fail"  # the goal does not hold
    info = "info"  # measured, no goal (a floor, a reference, a breakdown)
    skipped = "skipped"  # not measured in this run (e.g. smoke mode), with the reason


_GOAL = re.compile(r"^\s*(>=|<=)\s*([0-9]*\.?[0-9]+)\s*(\S*)\s*$")


class Goal(BaseModel):
    """A comparison: ``op threshold unit``. Unit ``x`` compares the ratio to the
    reference; any other unit compares the figure itself, which must be in that unit."""

    model_config = ConfigDict(frozen=True)

    op: Literal[">=", "<="]
    threshold: float
    unit: str

    @classmethod
    def parse(cls, text: str) -> Goal:
        m = _GOAL.match(text)
        if m is None:
            raise ValueError(f"goal {text!r} is not a comparison; write e.g. '>= 0.95x' or "
                             "'<= 50 ms'")
        op = ">=" if m.group(1) == ">=" else "<="
        return cls(op=op, threshold=float(m.group(2)), unit=m.group(3))

    def holds(self, value: float | None, ratio: float | None, unit: str) -> bool | None:
        """Whether the goal holds; None when the figure it compares is missing."""
        if self.unit != "x" and self.unit != unit:
            raise ValueError(f"goal '{self}' compares {self.unit!r} but the figure is in "
                             f"{unit!r}; state the goal in the figure's unit")
        got = ratio if self.unit == "x" else value
        if got is None or math.isnan(got):
            return None
        return got >= self.threshold if self.op == ">=" else got <= self.threshold

    def __str__(self) -> str:
        sep = "" if self.unit in ("x", "%") else " "
        return f"{self.op} {self.threshold:g}{sep}{self.unit}".rstrip()


class Measure(BaseModel):
    """One figure of reg beside its reference, with its goal and verdict."""

    key: str  # stable identifier, the same in smoke and full runs
    name: str  # what was measured, with its sizes
    value: float | None
    unit: str
    reference: float | None = None
    reference_name: str = ""
    ratio: float | None = None
    goal: str | None = None
    verdict: Verdict
    rounds: int = 1
    notes: str = ""


def measure(key: str, name: str, value: float | None, unit: str, *,
            reference: float | None = None, reference_name: str = "",
            ratio: float | None = None, goal: str | None = None, rounds: int = 1,
            notes: str = "") -> Measure:
    """A measure with its verdict. ``ratio`` defaults to value / reference; pass it when
    the benchmark computes it pair by pair (the median of per-round ratios)."""
    if ratio is None and value is not None and reference:
        ratio = value / reference
    if goal is None:
        verdict = Verdict.info
    else:
        holds = Goal.parse(goal).holds(value, ratio, unit)
        verdict = (Verdict.skipped if holds is None
                   else Verdict.passed if holds else Verdict.failed)
        goal = str(Goal.parse(goal))
    return Measure(key=key, name=name, value=value, unit=unit, reference=reference,
                   reference_name=reference_name, ratio=ratio, goal=goal, verdict=verdict,
                   rounds=rounds, notes=notes)


def skipped(key: str, name: str, unit: str, why: str, *, goal: str | None = None) -> Measure:
    """A measure this run did not take, and why (never a figure made up in its place)."""
    return Measure(key=key, name=name, value=None, unit=unit, rounds=0, notes=why,
                   goal=None if goal is None else str(Goal.parse(goal)),
                   verdict=Verdict.skipped)


class Series(BaseModel):
    label: str
    points: list[tuple[float, float]]
    dashed: bool = False  # a reference drawn beside reg's line


class Curve(BaseModel):
    """One plot: y against x for one or more series."""

    key: str  # the PNG's file name, without .png
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    log_x: bool = False
    notes: str = ""


class BenchReport(BaseModel):
    """What one benchmark process measured."""

    bench: str
    smoke: bool
    measures: list[Measure] = []
    curves: list[Curve] = []
    notes: list[str] = []

    def write(self, path: Path | None) -> None:
        if path is not None:
            path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> BenchReport:
        return cls.model_validate_json(path.read_text(encoding="utf-8"))


class Machine(BaseModel):
    cpu_model: str
    cores: int
    memory_gib: float
    load_before: tuple[float, float, float]  # 1, 5 and 15 minute load averages
    load_after: tuple[float, float, float]
    python: str


class BenchRun(BaseModel):
    """One benchmark process: its command, how it ended, and what it reported."""

    bench: str
    command: list[str]
    exit_code: int | None  # None: killed at its timeout
    seconds: float
    log: str
    report: BenchReport | None = None
    error: str = ""  # why no report came back (exit status, timeout)
    log_tail: str = ""  # the log's last lines when no report came back


class Goal12(BaseModel):
    """One goal the issue lists, and the measure that answers it (or why none does)."""

    goal: str
    key: str
    verdict: Verdict | None = None  # None: not measured in this run
    why: str = ""


class RunResults(BaseModel):
    """bench/results.json: everything one `make bench` (or `make bench-smoke`) measured."""

    date: str
    commit: str
    smoke: bool
    machine: Machine
    runs: list[BenchRun]
    goals: list[Goal12]

    def measures(self) -> list[Measure]:
        return [m for r in self.runs if r.report for m in r.report.measures]

    def curves(self) -> list[Curve]:
        return [c for r in self.runs if r.report for c in r.report.curves]

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> RunResults:
        return cls.model_validate_json(path.read_text(encoding="utf-8"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--smoke`` and ``--json OUT``, the same in every benchmark."""
    parser.add_argument("--smoke", action="store_true",
                        help="few rounds, small sizes, the same code paths (figures not "
                             "comparable with a full run)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="write the measures here (bench/results.py's BenchReport)")
