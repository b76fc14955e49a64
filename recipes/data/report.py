"""The data report: what was read, removed, redacted, mixed and split, with token counts.

Saved as ``data_report.json`` next to the prepared splits and inside every
trained artifact, and printed by ``reg data``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

REPORT_VERSION = 1


@dataclass
class TokenStats:
    """Token counts of one split (after truncation to training.max_seq_length)."""

    examples: int = 0
    tokens: int = 0
    min: int = 0
    mean: float = 0.0
    p50: int = 0
    p95: int = 0
    max: int = 0
    label_tokens: int | None = None  # chat: tokens the loss is computed on
    truncated: int = 0  # examples longer than max_seq_length

    @classmethod
    def of(cls, lengths: list[int], *, label_tokens: int | None = None,
           truncated: int = 0) -> TokenStats:
        if not lengths:
            return cls(label_tokens=label_tokens, truncated=truncated)
        ordered = sorted(lengths)
        return cls(
            examples=len(ordered),
            tokens=sum(ordered),
            min=ordered[0],
            mean=round(sum(ordered) / len(ordered), 2),
            p50=_quantile(ordered, 0.5),
            p95=_quantile(ordered, 0.95),
            max=ordered[-1],
            label_tokens=label_tokens,
            truncated=truncated,
        )


def _quantile(ordered: list[int], q: float) -> int:
    """Nearest-rank quantile (an actual length, not an interpolation)."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class SourceReport:
    name: str
    path: str
    format: str
    rows: int
    kept: int = 0


@dataclass
class DataReport:
    """Everything ``prepare_data`` did, JSON-serialisable through :meth:`to_json`."""

    recipe: str
    kind: str
    objective: str
    max_seq_length: int
    sources: list[SourceReport] = field(default_factory=list)
    cleaning: dict[str, Any] = field(default_factory=dict)
    mix: dict[str, Any] = field(default_factory=dict)
    replay: dict[str, Any] | None = None
    split: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, TokenStats] = field(default_factory=dict)
    # What the model will be asked, binned (recipes.data.drift.PromptReference.to_json):
    # the gateway's drift score compares served prompts with it. None in older reports.
    prompts: dict[str, Any] | None = None
    version: int = REPORT_VERSION

    @property
    def rows_read(self) -> int:
        return sum(s.rows for s in self.sources)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows_read"] = self.rows_read
        return out
