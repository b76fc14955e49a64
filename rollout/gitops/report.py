"""What a reconcile pass reports: per-model outcomes, and the observer a progress display is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rollout.gitops.plan import Action, Plan


@dataclass
class Outcome:
    """What one model's actions came to in a pass."""

    model: str
    action: Action
    result: str  # registered | rejected | deployed | failed | skipped | cancelled | archived
    version: int | None = None
    run_id: int | None = None
    error: str | None = None
    seconds: float = 0.0
    trained: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "action": self.action.value, "result": self.result,
                "version": self.version, "run_id": self.run_id, "error": self.error,
                "seconds": round(self.seconds, 3), "trained": self.trained}


@dataclass
class PassReport:
    plan: Plan
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "failed"]

    @property
    def trained(self) -> int:
        return sum(1 for o in self.outcomes if o.trained)

    def as_json(self) -> dict[str, Any]:
        return {"plan": self.plan.as_json(), "outcomes": [o.as_json() for o in self.outcomes],
                "seconds": round(self.seconds, 3)}


class Observer(Protocol):
    """What a progress display is told. Every method is optional in spirit: no-ops are fine."""

    def planned(self, plan: Plan) -> None: ...
    def step(self, model: str, step: str, detail: str = "") -> None: ...
    def finished(self, outcome: Outcome) -> None: ...


class QuietObserver:
    def planned(self, plan: Plan) -> None:
        pass

    def step(self, model: str, step: str, detail: str = "") -> None:
        pass

    def finished(self, outcome: Outcome) -> None:
        pass
