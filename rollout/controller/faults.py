"""Fault points: where a controller can be told to die like ``kill -9``, for crash-safety tests.

A controller calls :meth:`FaultPoints.after` right after each step that
changes the world (a row written, a blob stored, a stage moved). Which of
those points fire is decided once, by the process that builds the
controller, and passed in: the code being interrupted never reads the
environment. ``reg reconcile`` parses ``$REG_FAULT`` with :meth:`FaultPoints.parse`.

The spec is ``after:<step>[@<subject>]``, several comma-separated, e.g.
``after:trained@support-bot,after:deployed``; a step without a subject fires
for every subject.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from recipes.core.errors import RegError


class BadFaultSpec(RegError):
    """A fault spec that names no known step, or is not ``after:<step>[@<subject>]``."""


def die_like_kill(step: str, subject: str) -> None:
    """Exit at once with SIGKILL's status: no cleanup, no lease release, no ``finally``."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(137)


@dataclass(frozen=True)
class FaultPoints:
    """The (step, subject) points at which to crash; ``""`` as subject means any subject."""

    points: frozenset[tuple[str, str]] = frozenset()
    crash: Callable[[str, str], None] = field(default=die_like_kill, compare=False)

    @classmethod
    def parse(cls, spec: str, steps: Sequence[str],
              crash: Callable[[str, str], None] = die_like_kill) -> FaultPoints:
        """Points from ``spec``; raises :class:`BadFaultSpec` naming the bad item and the steps."""
        points: set[tuple[str, str]] = set()
        for item in filter(None, (part.strip() for part in spec.split(","))):
            kind, _, rest = item.partition(":")
            step, _, subject = rest.partition("@")
            if kind != "after" or step not in steps:
                raise BadFaultSpec(
                    f"fault point {item!r} is not after:<step>[@<subject>] with a known step",
                    hint=f"steps: {', '.join(steps)}; e.g. after:{steps[0]}" if steps else None)
            points.add((step, subject))
        return cls(frozenset(points), crash)

    def after(self, step: str, subject: str) -> None:
        """Crash here if a point asks for ``step`` (of ``subject``, or of any subject)."""
        if (step, "") in self.points or (step, subject) in self.points:
            self.crash(step, subject)


NO_FAULTS = FaultPoints()
