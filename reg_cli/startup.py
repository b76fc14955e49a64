"""The process-wide start-up policy of a `reg` command, applied once by ``reg_cli.main``.

A command's process spends its first fraction of a second allocating objects that all
live until exit: SQLAlchemy, SQLModel, pydantic's validators, the table classes, a
listing of versions. At Python's default the cyclic garbage collector walks them again
and again while they are made, frees nothing, and walks them all once more at exit. So:

1. ``begin()``, before anything is imported or parsed: the young generation is collected
   every ``YOUNG_THRESHOLD`` net allocations instead of every 700. Reference counting
   still frees every acyclic object at once; only cyclic garbage waits, for at most that
   many allocations, in long-running commands (serve, reconcile --watch, train) too.
2. ``end()``, when the command returns or fails: everything alive is frozen, so the
   collection the interpreter runs at exit skips it.

Library code calls no ``gc`` function: this module is the one place that does, and
``bench/bench_registry.py`` applies the same policy to what it measures in process.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 500_000


def begin() -> None:
    """Apply the policy at the start of a process (see the module docstring)."""
    gc.set_threshold(YOUNG_THRESHOLD)


def end() -> None:
    """Freeze what is alive, so the exit collection skips it."""
    gc.freeze()
