"""Builders of `reg doctor` snapshots for its pure checks: real recipe models validated the
way the loader validates them, no file read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from recipes.evaluation.human.results import HumanEvalResult
from recipes.evaluation.report import EvaluationReport
from recipes.loading.recipe import LoadedRecipe
from recipes.schema import Recipe
from registry.doctor.drift import DeployedReference, DriftFacts
from registry.doctor.reeval import ReevalFacts, ServedRun
from registry.doctor.snapshot import DataStats, RecipeState, VersionRecord

WORKSPACE = Path("/ws")


def recipe_doc(name: str = "bot") -> dict[str, Any]:
    """The smallest valid recipe document (every other field at its default)."""
    return {"apiVersion": "reg/v1", "kind": "Recipe", "metadata": {"name": name},
            "spec": {"base_model": {"path": "../models/tiny"},
                     "data": {"sources": [{"path": "../data/train.jsonl"}]}}}


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    node = doc
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def loaded(changes: Mapping[str, Any] | None = None) -> LoadedRecipe:
    """A validated recipe: ``loaded({"spec.training.learning_rate": 0.01})``."""
    doc = recipe_doc()
    for dotted, value in (changes or {}).items():
        _set(doc, dotted, value)
    recipe = Recipe.model_validate_json(json.dumps(doc))
    return LoadedRecipe(recipe=recipe, path=WORKSPACE / "recipes" / "bot.yaml", text="",
                        workspace=WORKSPACE)


def data_stats(*, train: int = 300, validation: int = 30, test: int = 30,
               removed: dict[str, int] | None = None,
               pii: dict[str, int] | None = None, current: bool | None = True) -> DataStats:
    return DataStats(source="v1's data report", current=current,
                     rows_read=train + validation + test + sum((removed or {}).values()),
                     train=train, validation=validation, test=test, removed=removed or {},
                     pii_redacted=pii or {})


def version(number: int = 1, *, method: str = "lora", status: str = "ready",
            metrics: dict[str, Any] | None = None) -> VersionRecord:
    report = None if metrics is None else EvaluationReport.parse(metrics)
    return VersionRecord(number=number, status=status, method=method, current=True,
                         report=report)


def human_eval(candidate: int = 1, *, model: str = "bot", wins: int = 7, losses: int = 3,
               alpha: float | None = 0.8) -> HumanEvalResult:
    """A stored human evaluation's result against the base (as `reg eval import` makes)."""
    decided = wins + losses
    return HumanEvalResult(
        model=model, candidate=candidate, other=None, export_id="e1", seed=0,
        raters=["r1", "r2", "r3"], items=decided, judgments=3 * decided, unrated=0,
        wins=wins, losses=losses, ties=0, win_rate=wins / decided if decided else None,
        ci_low=None, ci_high=None, p_value=None, alpha=alpha,
        choices={"candidate": 3 * wins, "other": 3 * losses, "tie": 0}, criteria=[])


def state(changes: Mapping[str, Any] | None = None, *, data: DataStats | None = None,
          versions: list[VersionRecord] | None = None,
          num_params: int | None = 7_000_000_000,
          human: HumanEvalResult | None = None,
          drift: DriftFacts | None = None,
          reeval: ReevalFacts | None = None) -> RecipeState:
    """One recipe's state: ``changes`` sets recipe fields by dotted path."""
    return RecipeState(loaded=loaded(changes), num_params=num_params,
                       versions=versions or [], data=data, human_eval=human, drift=drift,
                       reeval=reeval)


def reevaluated(*numbers: int) -> ReevalFacts:
    """Re-evaluation facts of versions deployed and re-evaluated an hour ago, in tolerance."""
    now = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    return ReevalFacts(now=now, deployed=[ServedRun(n, ("production",), now - timedelta(hours=1))
                                          for n in numbers])


def monitored(*numbers: int, prometheus: str | None = "http://p") -> DriftFacts:
    """Drift facts of versions deployed with their references, scraped by ``prometheus``."""
    return DriftFacts(deployed=[DeployedReference(n, ("production",), True) for n in numbers],
                      prometheus_url=prometheus, scraped=frozenset(numbers))
