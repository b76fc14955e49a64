"""The evaluation report: what ``metrics.json`` holds, written and read here only.

1. ``recipes.evaluation.evaluate.evaluate`` builds an :class:`EvaluationReport`
   (per-split loss and perplexity of the tuned model and its base, greedy
   generation scores, preference rates, forgetting on general data, gate
   verdicts); training adds its summary and the device settings.
2. :meth:`EvaluationReport.write` stores it as the artifact's ``metrics.json``.
3. :meth:`EvaluationReport.read` (a file) and :meth:`EvaluationReport.parse`
   (the JSON the registry stores) read it back for the gates, the trainer's
   resume, registration and the CLI's tables.

Reading is tolerant: registered versions hold metrics.json files of every
age, some written by hand. Absent keys take their defaults; unknown keys are
kept as they are (and shown by ``reg show``); a flat ``eval_loss`` (an
artifact registered by hand) stands in for a held-out loss. A value of the
wrong type is an error naming the file and the key. NaN and infinities (a
diverged run) are written as ``null``: JSON has no such tokens, and
PostgreSQL's JSON type refuses them.
"""

# No `from __future__ import annotations`: pydantic would compile and evaluate every field's
# annotation string when the module is imported, and `reg versions` imports it.
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recipes.core.errors import RegError

SplitName = Literal["validation", "test"]
# The split the loss gates judge and `reg versions` shows: test when measured, else validation.
PRIMARY_SPLITS: tuple[SplitName, ...] = ("test", "validation")


class ReportError(RegError):
    """A metrics.json that is not an evaluation report."""


class _Section(BaseModel):
    # Keys this code does not know (older or newer writers, hand-made files) are kept.
    model_config = ConfigDict(extra="allow", defer_build=True)


class SplitMetrics(_Section):
    """Token-level loss on one split, for the tuned model and its base."""

    examples: int = 0
    tokens: int = 0
    loss: float | None = None
    base_loss: float | None = None
    perplexity: float | None = None
    base_perplexity: float | None = None


class GeneralMetrics(SplitMetrics):
    """Loss on ``evaluation.general`` data: how much the tuning made the model forget."""

    regression: float | None = None  # tuned / base perplexity - 1


class GenerationSample(_Section):
    prompt: str = ""
    reference: str = ""
    output: str = ""
    base_output: str = ""


class GenerationMetrics(_Section):
    """Greedy answers to test rows with a reference, scored for the tuned model and its base."""

    examples: int = 0
    exact_match: float | None = None
    contains: float | None = None
    rouge_l: float | None = None
    base_exact_match: float | None = None
    base_contains: float | None = None
    base_rouge_l: float | None = None
    latency_s_mean: float | None = None
    latency_s_p95: float | None = None
    tokens_per_s: float | None = None
    samples: list[GenerationSample] = Field(default_factory=list)


class PreferenceMetrics(_Section):
    """How often each model ranks the chosen answer over the rejected one (test split)."""

    examples: int = 0
    chosen_preferred: float | None = None
    base_chosen_preferred: float | None = None
    reward_accuracy: float | None = None
    reward_margin_mean: float | None = None


class GateResult(_Section):
    """One gate's verdict; ``value`` is None when its metric could not be measured."""

    gate: str
    value: float | None = None
    threshold: float | None = None
    passed: bool
    reason: str = ""


class TrainSummary(_Section):
    """What training reported (train_summary.json); the keys `reg train` prints are typed."""

    steps: int = 0
    resumed_from_step: int | None = None
    runtime_s: float | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    first_loss: float | None = None
    last_loss: float | None = None
    packing: bool | None = None


class HeldOutLoss(NamedTuple):
    split: str
    tuned: float
    base: float | None


class MetricRow(NamedTuple):
    metric: str
    tuned: float
    base: float | None


class EvaluationReport(_Section):
    """Everything measured about one trained artifact; see the module docstring."""

    validation: SplitMetrics | None = None
    test: SplitMetrics | None = None
    generation: GenerationMetrics | None = None
    preference: PreferenceMetrics | None = None
    general: GeneralMetrics | None = None
    gates: list[GateResult] = Field(default_factory=list)
    gates_passed: bool | None = None  # None: no verdict (a hand-made artifact)
    evaluation_s: float | None = None
    train: TrainSummary | None = None
    device: dict[str, Any] | None = None

    @field_validator("gates", mode="before")
    @classmethod
    def _gates_as_list(cls, value: Any) -> Any:
        # Older hand-made files keep gates as {name: {value, threshold, passed}}.
        if isinstance(value, dict):
            return [{"gate": k, **(g if isinstance(g, dict) else {"value": g})}
                    for k, g in value.items()]
        return [] if value is None else value

    # -- reading and writing --------------------------------------------------------------

    @classmethod
    def parse(cls, data: Any, *, where: str = "metrics") -> "EvaluationReport":
        """The report in ``data`` (a decoded metrics.json, or what the registry stored)."""
        if not isinstance(data, dict):
            raise ReportError(f"{where}: expected a JSON object, got {type(data).__name__}",
                              hint="metrics.json is written by `reg train`; train again")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<document>'}: {err['msg']}"
                for err in e.errors())
            raise ReportError(f"{where}: {problems}",
                              hint="metrics.json is written by `reg train`; train again") from e

    @classmethod
    def read(cls, path: Path) -> "EvaluationReport":
        """The report in the file ``path`` (an artifact's metrics.json)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ReportError(f"{path}: not valid JSON: {e}",
                              hint="metrics.json is written by `reg train`; train again") from e
        return cls.parse(data, where=str(path))

    def to_json(self) -> dict[str, Any]:
        """The report as JSON values: the keys it was given or built with, NaN as null."""
        out: dict[str, Any] = _finite(self.model_dump(exclude_unset=True))
        return out

    def write(self, path: Path) -> None:
        """Write ``path`` (metrics.json), keys sorted, as people read it."""
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n",
                        encoding="utf-8")

    # -- what the consumers ask ------------------------------------------------------------

    def split(self, name: str) -> SplitMetrics | None:
        value = getattr(self, name, None) if name in ("validation", "test", "general") else None
        return value if isinstance(value, SplitMetrics) else None

    def primary_split(self) -> SplitName | None:
        """The split the loss gates judge: test when it has a loss, else validation."""
        return primary_split(self.to_json())

    def held_out_loss(self) -> HeldOutLoss | None:
        """The tuned model's held-out loss with the base's (see :func:`held_out_loss`)."""
        return held_out_loss(self.to_json())

    def gate_results(self) -> list[dict[str, Any]] | None:
        """The gates as the registry stores them; None when the file had no ``gates``."""
        if "gates" not in self.model_fields_set:
            return None
        gates: list[dict[str, Any]] = self.to_json()["gates"]
        return gates

    def numeric(self) -> dict[str, float]:
        """Every numeric value outside lists by dotted key (``test.loss``,
        ``generation.rouge_l``; not the gates or the samples)."""
        return _numeric_leaves(self.to_json())

    def comparison(self) -> list[MetricRow]:
        """(metric, tuned, base) rows: ``x.base_y`` goes beside ``x.y``."""
        flat = self.numeric()
        rows: list[MetricRow] = []
        for key, value in sorted(flat.items()):
            prefix, _, leaf = key.rpartition(".")
            paired = f"{prefix}.{leaf[5:]}".lstrip(".")
            if leaf.startswith("base_") and paired in flat:
                continue
            rows.append(MetricRow(key, value, flat.get(f"{prefix}.base_{leaf}".lstrip("."))))
        return rows


# Read straight from the report's JSON (what ``to_json`` gives and the registry stores) for
# `reg versions`, which shows a loss for each of its rows: building the model for that costs
# more than the rest of the listing. The model's methods of the same name call these.


def primary_split(data: Mapping[str, Any]) -> SplitName | None:
    """The split the loss gates judge: test when it has a loss, else validation."""
    for name in PRIMARY_SPLITS:
        m = data.get(name)
        if isinstance(m, Mapping) and _number(m.get("loss")) is not None:
            return name
    return None


def held_out_loss(data: Mapping[str, Any]) -> HeldOutLoss | None:
    """The tuned model's held-out loss with the base's: the primary split's, else a flat
    ``eval_loss`` of a hand-made metrics.json."""
    name = primary_split(data)
    if name is not None:
        m = data[name]
        return HeldOutLoss(name, float(m["loss"]), _number(m.get("base_loss")))
    flat = _number(data.get("eval_loss"))
    return None if flat is None else HeldOutLoss("", flat, None)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (kept keys beyond pydantic's nesting limit)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _numeric_leaves(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, value in d.items():
        key = f"{prefix}{k}"
        if isinstance(value, dict):
            out.update(_numeric_leaves(value, key + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
    return out
