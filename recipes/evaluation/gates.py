"""Quality gates: pure verdicts over the evaluation report.

``check_gates(spec.evaluation.gates, report)`` returns one result per gate
that the recipe sets. A gate whose metric could not be measured (say,
``min_exact_match`` on a test split without reference answers) fails with a
reason, so a missing measurement never passes silently.
"""

from __future__ import annotations

from collections.abc import Callable

from recipes.evaluation.report import EvaluationReport, GateResult
from recipes.schema import GatesSpec

Reading = Callable[[EvaluationReport], tuple[float | None, str]]


def _split_value(key: str) -> Reading:
    def get(report: EvaluationReport) -> tuple[float | None, str]:
        split = report.primary_split()
        if split is None:
            return None, "no validation or test split to measure"
        value = getattr(report.split(split), key)
        return (None if value is None else float(value)), f"{key} on the {split} split"

    return get


def _improvement(report: EvaluationReport) -> tuple[float | None, str]:
    split = report.primary_split()
    if split is None:
        return None, "no validation or test split to measure"
    m = report.split(split)
    assert m is not None
    tuned, base = m.perplexity, m.base_perplexity
    if tuned is None or base is None or base <= 0:
        return None, f"no base perplexity on the {split} split"
    return (base - tuned) / base, (
        f"(base - tuned) / base perplexity on the {split} split ({base:.4g} -> {tuned:.4g})"
    )


def _generation(key: str) -> Reading:
    def get(report: EvaluationReport) -> tuple[float | None, str]:
        gen = report.generation
        if gen is None or not gen.examples:
            return None, "no test rows with reference answers were decoded"
        value = getattr(gen, key)
        return (None if value is None else float(value)), (
            f"{key} over {gen.examples} greedy test generations")

    return get


def _general(report: EvaluationReport) -> tuple[float | None, str]:
    gen = report.general
    if gen is None or gen.regression is None:
        return None, "evaluation.general was not measured"
    return gen.regression, (
        f"tuned / base perplexity - 1 on evaluation.general "
        f"({gen.base_perplexity or 0:.4g} -> {gen.perplexity or 0:.4g})"
    )


def _pairwise(report: EvaluationReport) -> tuple[float | None, str]:
    pref = report.preference
    if pref is None or not pref.examples or pref.chosen_preferred is None:
        return None, "no test preference pairs were scored"
    return pref.chosen_preferred, (
        f"share of {pref.examples} test pairs with chosen ranked above rejected")


# gate name -> (how to read its value, True when the value must stay at or below the threshold)
_GATES: dict[str, tuple[Reading, bool]] = {
    "max_perplexity": (_split_value("perplexity"), True),
    "max_eval_loss": (_split_value("loss"), True),
    "min_improvement_vs_base": (_improvement, False),
    "min_exact_match": (_generation("exact_match"), False),
    "min_contains": (_generation("contains"), False),
    "min_rouge_l": (_generation("rouge_l"), False),
    "max_general_regression": (_general, True),
    "min_pairwise_accuracy": (_pairwise, False),
}


def check_gates(gates: GatesSpec, report: EvaluationReport) -> list[GateResult]:
    """One result per configured gate, in the schema's field order. Pure."""
    out: list[GateResult] = []
    for name in GatesSpec.model_fields:
        threshold = getattr(gates, name)
        if threshold is None:
            continue
        read, is_max = _GATES[name]
        value, how = read(report)
        if value is None:
            out.append(GateResult(gate=name, value=None, threshold=float(threshold),
                                  passed=False, reason=f"not measured: {how}"))
            continue
        passed = value <= threshold if is_max else value >= threshold
        op = "<=" if is_max else ">="
        verdict = "ok" if passed else "FAILED"
        reason = f"{verdict}: {value:.4g} {op} {threshold:g} ({how})"
        out.append(GateResult(gate=name, value=value, threshold=float(threshold),
                              passed=passed, reason=reason))
    return out
