"""What `reg doctor` says of an item: its verdict, the finding, the report, the titles."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from registry.doctor.snapshot import RecipeState

WORKSPACE = "workspace"  # the subject of items that are not about one recipe


class Status(StrEnum):
    """An item's verdict."""

    passed = "pass"  # the practice is followed (and, where it can be, seen in the data)
    warn = "warn"  # missing, or not known yet: the detail says which
    fail = "fail"  # broken in a way that costs users: `reg doctor` exits 1


class Finding(BaseModel):
    """One checklist item for one recipe (or the workspace)."""

    subject: str  # recipe (model) name, or "workspace"
    item: str  # stable id, e.g. "test-split"
    title: str
    status: Status
    detail: str
    fix: str = ""  # empty when the item passes


class Report(BaseModel):
    """Every finding, in checklist order per recipe, then the workspace's."""

    recipes_dir: str
    findings: list[Finding]

    @property
    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for f in self.findings if f.status is s) for s in Status}

    @property
    def exit_code(self) -> int:
        return 1 if any(f.status is Status.fail for f in self.findings) else 0

    def to_json(self) -> dict[str, Any]:
        return {"recipes_dir": self.recipes_dir, "counts": self.counts,
                "exit_code": self.exit_code,
                "findings": [f.model_dump(mode="json") for f in self.findings]}


def finding(r: RecipeState | str, item: str, status: Status, detail: str,
            fix: str = "") -> Finding:
    subject = r if isinstance(r, str) else r.name
    return Finding(subject=subject, item=item, title=TITLES[item], status=status,
                   detail=detail, fix="" if status is Status.passed else fix)



TITLES: dict[str, str] = {
    "recipe-valid": "Recipe is valid",
    "examples": "Enough examples",
    "test-split": "Held-out test split",
    "data-cleaned": "Data cleaned",
    "data-deduplicated": "Data deduplicated",
    "data-pii": "PII redacted",
    "baseline": "Baseline against the base model",
    "general-gate": "General-capability regression gate",
    "peft-first": "PEFT before full fine-tuning",
    "learning-rate": "Learning rate in the usual range",
    "checkpoints": "Checkpoints",
    "early-stopping": "Early stopping",
    "rollout-plan": "Rollout plan with a minimum sample",
    "human-eval": "Human evaluation",
    "drift-monitored": "Drift monitored",
    "reeval-scheduled": "Re-evaluation scheduled",
    "metrics-scraped": "Metrics scraped",
}
