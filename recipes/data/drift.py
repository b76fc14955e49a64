"""What a model will be asked, as training saw it, and how far what it is asked moved (PSI).

The data pipeline records a :class:`PromptReference` per recipe in its data report
(``data_report.json``, field ``prompts``), so every trained artifact, and every version
registered from one, carries it. The gateway bins the prompts it is asked with the
reference's own bins (:class:`Bins`) and compares the two with :func:`psi`.

The two features, binned:

- ``length``: prompt length in tokens, in the fixed, power-of-two bins of
  :data:`LENGTH_EDGES` (bin *i* holds lengths in ``[edge_i, edge_i+1)``; the last holds
  everything from its edge up);
- ``tokens``: every prompt token, in one bin per token id of the :data:`TOP_TOKENS` most
  frequent ids of the training prompts, plus one ``other`` bin for every other id.

A prompt is what the model is given before it answers: for chat rows the rendered chat
template up to the first assistant token (the generation prompt included), for
preference rows their prompt, for text rows the whole text. Replay rows are not
counted (they are not what the model is tuned to be asked).

PSI (population stability index) of proportions ``e`` (reference) and ``a`` (served):
``sum_i (a_i - e_i) * ln(a_i / e_i)``, with a proportion of 0 counted as
:data:`EPSILON` (without renormalising), so an empty bin scores a large finite term
instead of an infinite one. The usual reading: below 0.1 stable, 0.1 to 0.25 moderate,
above 0.25 significant (:func:`verdict`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

SCHEME = 1
LENGTH_EDGES: tuple[int, ...] = (0, *(2 ** i for i in range(1, 14)))  # 0, 2, 4, ... 8192
TOP_TOKENS = 32
EPSILON = 1e-4
STABLE_BELOW = 0.1
SIGNIFICANT_ABOVE = 0.25
FEATURES = ("length", "tokens")

Counts = npt.NDArray[np.int64]


class BadReference(ValueError):
    """A stored reference that is not one this code can compare with (names the field)."""


@dataclass(frozen=True)
class PromptReference:
    """The training prompts' distributions, in the bins the gateway uses too."""

    prompts: int
    tokens: int
    length_edges: tuple[int, ...]
    length_counts: tuple[int, ...]  # one per edge
    token_ids: tuple[int, ...]  # most frequent first
    token_text: tuple[str, ...]  # each id decoded, for people
    token_counts: tuple[int, ...]  # one per id, then ``other``
    scheme: int = SCHEME

    def to_json(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "prompts": self.prompts, "tokens": self.tokens,
                "length_edges": list(self.length_edges),
                "length_counts": list(self.length_counts),
                "token_ids": list(self.token_ids), "token_text": list(self.token_text),
                "token_counts": list(self.token_counts)}

    @classmethod
    def parse(cls, data: Any, where: str) -> PromptReference:
        """The reference :meth:`to_json` wrote; :class:`BadReference` naming ``where`` and
        the field otherwise."""
        if not isinstance(data, Mapping):
            raise BadReference(f"{where}: prompts is not an object")
        if data.get("scheme") != SCHEME:
            raise BadReference(f"{where}: prompts.scheme is {data.get('scheme')!r}, this "
                                 f"gateway compares scheme {SCHEME}")

        def ints(name: str) -> tuple[int, ...]:
            v = data.get(name)
            if not isinstance(v, list) or not all(
                    isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
                raise BadReference(f"{where}: prompts.{name} is not a list of counts")
            return tuple(v)

        edges, lengths = ints("length_edges"), ints("length_counts")
        ids, counts = ints("token_ids"), ints("token_counts")
        text = data.get("token_text")
        if not isinstance(text, list) or len(text) != len(ids):
            raise BadReference(f"{where}: prompts.token_text is not one string per token id")
        if len(lengths) != len(edges) or list(edges) != sorted(set(edges)) or not edges:
            raise BadReference(f"{where}: prompts.length_counts does not match length_edges")
        if len(counts) != len(ids) + 1 or len(set(ids)) != len(ids):
            raise BadReference(f"{where}: prompts.token_counts is not one count per token "
                                 "id plus `other`")
        prompts, tokens = data.get("prompts"), data.get("tokens")
        if not isinstance(prompts, int) or not isinstance(tokens, int):
            raise BadReference(f"{where}: prompts.prompts and prompts.tokens must be counts")
        return cls(prompts=prompts, tokens=tokens, length_edges=edges, length_counts=lengths,
                   token_ids=ids, token_text=tuple(str(t) for t in text), token_counts=counts)

    @property
    def bins(self) -> Bins:
        return Bins(self.length_edges, self.token_ids)


class Bins:
    """Bin prompts the way a reference did: by its length edges and its token ids."""

    def __init__(self, length_edges: Sequence[int], token_ids: Sequence[int]) -> None:
        self.edges = np.asarray(length_edges, dtype=np.int64)
        ids = np.asarray(token_ids, dtype=np.int64)
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]
        self.token_bins = len(ids) + 1

    @property
    def length_bins(self) -> int:
        return len(self.edges)

    def length_bin(self, length: int) -> int:
        return max(0, int(np.searchsorted(self.edges, length, side="right")) - 1)

    def length_counts(self, lengths: Iterable[int]) -> Counts:
        idx = np.searchsorted(self.edges, np.fromiter(lengths, dtype=np.int64), side="right")
        return np.bincount(np.maximum(idx - 1, 0), minlength=self.length_bins)

    def token_counts(self, ids: Sequence[int] | npt.NDArray[np.int64]) -> Counts:
        """Counts of ``ids`` per token bin (the reference's ids in its order, then other)."""
        arr = np.asarray(ids, dtype=np.int64)
        other = self.token_bins - 1
        if not arr.size or not self._sorted.size:
            return np.bincount(np.full(arr.size, other, dtype=np.int64),
                               minlength=self.token_bins)
        pos = np.minimum(np.searchsorted(self._sorted, arr), self._sorted.size - 1)
        hit = self._sorted[pos] == arr
        return np.bincount(np.where(hit, self._order[pos], other), minlength=self.token_bins)


def build_reference(prompts: Iterable[Sequence[int]],
                    decode: Callable[[int], str]) -> PromptReference:
    """The reference of these prompts' token ids; ``decode`` names a token for people."""
    lengths: list[int] = []
    freq: Counter[int] = Counter()
    for ids in prompts:
        lengths.append(len(ids))
        freq.update(ids)
    # most_common breaks ties by first occurrence; sort by (-count, id) to be reproducible.
    top = tuple(i for i, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_TOKENS])
    bins = Bins(LENGTH_EDGES, top)
    tokens = sum(freq.values())
    in_top = [freq[i] for i in top]
    return PromptReference(
        prompts=len(lengths), tokens=tokens, length_edges=LENGTH_EDGES,
        length_counts=tuple(int(x) for x in bins.length_counts(lengths)),
        token_ids=top, token_text=tuple(decode(i) for i in top),
        token_counts=(*in_top, tokens - sum(in_top)))


@dataclass(frozen=True)
class Comparison:
    """PSI of one feature, with each bin's proportions and term."""

    psi: float
    expected: tuple[float, ...]  # reference proportions (before the epsilon floor)
    actual: tuple[float, ...]
    terms: tuple[float, ...]  # each bin's share of psi


def psi(expected: Sequence[int] | Counts, actual: Sequence[int] | Counts) -> Comparison | None:
    """PSI of two count vectors over the same bins; None when either has no count."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: {e.shape[0]} expected, {a.shape[0]} actual")
    if e.sum() <= 0 or a.sum() <= 0:
        return None
    pe, pa = e / e.sum(), a / a.sum()
    fe, fa = np.maximum(pe, EPSILON), np.maximum(pa, EPSILON)
    terms = (fa - fe) * np.log(fa / fe)
    return Comparison(psi=float(terms.sum()), expected=tuple(pe.tolist()),
                      actual=tuple(pa.tolist()), terms=tuple(terms.tolist()))


def verdict(value: float) -> str:
    """The usual reading of a PSI: stable, moderate or significant."""
    if value < STABLE_BELOW:
        return "stable"
    return "moderate" if value <= SIGNIFICANT_ABOVE else "significant"


def length_labels(edges: Sequence[int]) -> list[str]:
    """``0-1``, ``2-3``, ... ``8192+``: each length bin's range, for people."""
    out = [f"{a}-{b - 1}" for a, b in pairwise(edges)]
    return [*out, f"{edges[-1]}+"] if edges else out
