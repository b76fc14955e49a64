"""Prompting vs RAG vs fine-tuning vs hybrid, decided from the recipe's real data
(seed: ApproachRecommender).

Signals, each measured:
- examples after cleaning (the data pipeline's report);
- output format regularity: the share of answers sharing the dominant
  shape (JSON object / list / the most common leading word) — fine-tuning
  teaches a consistent format well, prompting struggles to;
- how often the data files change, from git history when they live in a git
  repository: facts that change weekly belong in retrieval, not in weights.

``recommend`` is a pure function of those signals and explains itself.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

# Thresholds, in one place so the reasons can quote them.
MIN_EXAMPLES_TO_TUNE = 50
GOOD_EXAMPLES = 200
REGULAR_FORMAT = 0.6
FREQUENT_CHANGES_PER_MONTH = 4.0
HISTORY_DAYS = 90


class Approach(StrEnum):
    prompting = "prompting"
    rag = "rag"
    fine_tuning = "fine_tuning"
    hybrid = "hybrid"


@dataclass(frozen=True)
class DataSignals:
    examples: int
    format_regularity: float
    dominant_shape: str
    changes_per_month: float | None  # None when the data is not in a git repository
    commits: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"examples": self.examples, "format_regularity": self.format_regularity,
                "dominant_shape": self.dominant_shape,
                "changes_per_month": self.changes_per_month, "commits": self.commits}


@dataclass(frozen=True)
class Advice:
    approach: Approach
    reasons: list[str]
    signals: DataSignals
    alternatives: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"approach": self.approach.value, "reasons": self.reasons,
                "alternatives": self.alternatives, "signals": self.signals.to_json()}


def answer_shape(text: str) -> str:
    """A coarse shape of an answer: json, list, or its first word."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            json.loads(stripped)
            return "json"
        except json.JSONDecodeError:
            pass
    if stripped.startswith(("- ", "* ", "1.", "1)")):
        return "list"
    first = stripped.split(maxsplit=1)[0].lower().strip(".,:;!?") if stripped else ""
    return f"starts with '{first}'" if first else "empty"


def format_regularity(answers: Sequence[str]) -> tuple[float, str]:
    """Share of answers with the most common shape, and that shape. Pure."""
    if not answers:
        return 0.0, "none"
    shape, count = Counter(answer_shape(a) for a in answers).most_common(1)[0]
    return count / len(answers), shape


def recommend(s: DataSignals) -> Advice:
    """The approach for these signals, with every reason. Pure."""
    reasons = [f"{s.examples} examples after cleaning",
               f"{s.format_regularity:.0%} of answers share one shape ({s.dominant_shape})"]
    if s.changes_per_month is None:
        reasons.append("data change rate unknown (the data files are not in a git repository)")
    else:
        reasons.append(f"data files changed {s.changes_per_month:.1f} times a month "
                       f"over the last {HISTORY_DAYS} days ({s.commits} commits)")
    frequent = s.changes_per_month is not None and s.changes_per_month >= FREQUENT_CHANGES_PER_MONTH
    regular = s.format_regularity >= REGULAR_FORMAT
    if s.examples < MIN_EXAMPLES_TO_TUNE:
        reasons.append(f"fewer than {MIN_EXAMPLES_TO_TUNE} examples: too few to fine-tune; "
                       "use them as few-shot examples in the prompt")
        alt = ["rag" if frequent else "fine_tuning once there are more examples"]
        return Advice(Approach.prompting, reasons, s, alt)
    if frequent and regular and s.examples >= GOOD_EXAMPLES:
        reasons.append(f"changes >= {FREQUENT_CHANGES_PER_MONTH:g}/month: keep fast-changing "
                       "facts in retrieval; the regular format is worth fine-tuning")
        return Advice(Approach.hybrid, reasons, s, ["rag"])
    if frequent:
        reasons.append(f"changes >= {FREQUENT_CHANGES_PER_MONTH:g}/month: retrained weights "
                       "would lag the data; retrieve it at query time")
        return Advice(Approach.rag, reasons, s, ["hybrid once the format is regular"])
    if regular:
        reasons.append(f"a regular format (>= {REGULAR_FORMAT:.0%}) and stable data: "
                       "fine-tuning teaches it reliably and cheaply at inference")
    else:
        reasons.append("irregular answers: fine-tuning still adapts tone and domain, but "
                       "check the data for consistency")
    if s.examples < GOOD_EXAMPLES:
        reasons.append(f"under {GOOD_EXAMPLES} examples: prefer a small LoRA rank and watch "
                       "the validation loss")
    return Advice(Approach.fine_tuning, reasons, s, ["prompting", "rag"])


def git_change_rate(paths: Sequence[Path], days: int = HISTORY_DAYS,
                    now: float | None = None) -> tuple[float | None, int | None]:
    """Commits touching ``paths`` in the last ``days``, per 30 days; None outside git."""
    if not paths:
        return None, None
    cwd = paths[0].parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd,
                             capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None, None
    root = Path(top.stdout.strip())
    since = int((now if now is not None else time.time()) - days * 86400)
    try:
        log = subprocess.run(
            ["git", "log", f"--since={since}", "--format=%H", "--", *map(str, paths)],
            cwd=root, capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None, None
    commits = len([line for line in log.stdout.splitlines() if line.strip()])
    return commits * 30 / days, commits


def _answers(data: Any) -> list[str]:
    out: list[str] = []
    for split in data.splits.values():
        for row in split:
            if data.kind == "chat":
                msgs = row["messages"]
                if msgs and msgs[-1]["role"] == "assistant":
                    out.append(str(msgs[-1]["content"]))
            elif data.kind == "preference":
                out.extend(str(m["content"]) for m in row["chosen"][-1:])
            else:
                out.append(str(row["text"]))
    return out


def advise(loaded: Any) -> Advice:
    """Gather the signals from the recipe's data (and its git history) and recommend."""
    from recipes.data.pipeline import prepare_data
    from recipes.training.model import load_tokenizer

    spec = loaded.recipe.spec
    data = prepare_data(loaded, load_tokenizer(spec.base_model, loaded.base_model_path))
    examples = sum(s.examples for s in data.report.splits.values())
    regularity, shape = format_regularity(_answers(data))
    files = [loaded.resolve(s.path) for s in spec.data.sources]
    rate, commits = git_change_rate(files)
    return recommend(DataSignals(examples, regularity, shape, rate, commits))
