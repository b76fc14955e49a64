"""Quality gates: pure verdicts over the evaluation metrics.

``check_gates(spec.evaluation.gates, metrics)`` returns one result per gate
that the recipe sets. A gate whose metric could not be measured (say,
``min_exact_match`` on a test split without reference answers) fails with a
reason, so a missing measurement never passes silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recipes.schema import GatesSpec


@dataclass(frozen=True)
class GateResult:
    gate: str
    value: float | None
    threshold: float
    passed: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
            "reason": self.reason,
        }


def primary_split(metrics: dict[str, Any]) -> str | None:
    """The split the loss gates judge: test when it has tokens, else validation."""
    for split in ("test", "validation"):
        m = metrics.get(split)
        if isinstance(m, dict) and m.get("loss") is not None:
            return split
    return None


def _split_value(key: str) -> Callable[[dict[str, Any]], tuple[float | None, str]]:
    def get(metrics: dict[str, Any]) -> tuple[float | None, str]:
        split = primary_split(metrics)
        if split is None:
            return None, "no validation or test split to measure"
        value = metrics[split].get(key)
        return (None if value is None else float(value)), f"{key} on the {split} split"

    return get


def _improvement(metrics: dict[str, Any]) -> tuple[float | None, str]:
    split = primary_split(metrics)
    if split is None:
        return None, "no validation or test split to measure"
    m = metrics[split]
    tuned, base = m.get("perplexity"), m.get("base_perplexity")
    if tuned is None or base is None or base <= 0:
        return None, f"no base perplexity on the {split} split"
    return (float(base) - float(tuned)) / float(base), (
        f"(base - tuned) / base perplexity on the {split} split ({base:.4g} -> {tuned:.4g})"
    )


def _generation(key: str) -> Callable[[dict[str, Any]], tuple[float | None, str]]:
    def get(metrics: dict[str, Any]) -> tuple[float | None, str]:
        gen = metrics.get("generation")
        if not isinstance(gen, dict) or not gen.get("examples"):
            return None, "no test rows with reference answers were decoded"
        return float(gen[key]), f"{key} over {gen['examples']} greedy test generations"

    return get


def _general(metrics: dict[str, Any]) -> tuple[float | None, str]:
    gen = metrics.get("general")
    if not isinstance(gen, dict) or gen.get("regression") is None:
        return None, "evaluation.general was not measured"
    return float(gen["regression"]), (
        f"tuned / base perplexity - 1 on evaluation.general "
        f"({gen['base_perplexity']:.4g} -> {gen['perplexity']:.4g})"
    )


# gate name -> (how to read its value, True when the value must stay at or below the threshold)
_GATES: dict[str, tuple[Callable[[dict[str, Any]], tuple[float | None, str]], bool]] = {
    "max_perplexity": (_split_value("perplexity"), True),
    "max_eval_loss": (_split_value("loss"), True),
    "min_improvement_vs_base": (_improvement, False),
    "min_exact_match": (_generation("exact_match"), False),
    "min_contains": (_generation("contains"), False),
    "min_rouge_l": (_generation("rouge_l"), False),
    "max_general_regression": (_general, True),
}


def check_gates(gates: GatesSpec, metrics: dict[str, Any]) -> list[GateResult]:
    """One result per configured gate, in the schema's field order. Pure."""
    out: list[GateResult] = []
    for name in GatesSpec.model_fields:
        threshold = getattr(gates, name)
        if threshold is None:
            continue
        read, is_max = _GATES[name]
        value, how = read(metrics)
        if value is None:
            out.append(GateResult(name, None, float(threshold), False, f"not measured: {how}"))
            continue
        passed = value <= threshold if is_max else value >= threshold
        op = "<=" if is_max else ">="
        verdict = "ok" if passed else "FAILED"
        reason = f"{verdict}: {value:.4g} {op} {threshold:g} ({how})"
        out.append(GateResult(name, value, float(threshold), passed, reason))
    return out
