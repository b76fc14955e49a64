"""`reg doctor`'s "re-evaluation scheduled" item: its facts and how they are read.

Re-evaluation is scheduled for a model when every version a stage points at has a
re-evaluation (`reg eval run`, stored in ``eval_runs``) newer than :data:`STALE_AFTER`,
twice the suggested daily schedule (``--every 24h``, or a daily cron line): one missed
run is tolerated, a stopped schedule is not. The check itself (``check_reevaluation`` in
:mod:`registry.doctor.checks`) is pure over these facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from registry.api import Registry

STALE_AFTER = timedelta(days=2)


@dataclass(frozen=True)
class ServedRun:
    """One deployed version and its newest re-evaluation (None: never re-evaluated)."""

    number: int
    stages: tuple[str, ...]
    at: datetime | None = None
    regressed: tuple[str, ...] = ()
    error: str | None = None

    @property
    def label(self) -> str:
        return f"v{self.number} ({', '.join(self.stages)})"


@dataclass(frozen=True)
class ReevalFacts:
    """A model's deployed versions with their newest re-evaluations, read at ``now``."""

    now: datetime
    deployed: list[ServedRun] = field(default_factory=list)


def gather_reeval(reg: Registry, model: str) -> ReevalFacts:
    """The facts of ``model`` (no version registered yet: none deployed)."""
    from registry.errors import NotFound

    try:
        stages = reg.stage_map(model)
        latest = reg.latest_eval_runs(model)
    except NotFound:
        return ReevalFacts(now=reg.clock())
    by_version: dict[int, list[str]] = {}
    for stage, v in sorted(stages.items()):
        by_version.setdefault(v.number, []).append(stage)
    deployed = []
    for number, pointing in sorted(by_version.items()):
        run = latest.get(number)
        deployed.append(ServedRun(number, tuple(pointing)) if run is None else ServedRun(
            number, tuple(pointing), run.at, tuple(run.regressed_metrics), run.error))
    return ReevalFacts(now=reg.clock(), deployed=deployed)
