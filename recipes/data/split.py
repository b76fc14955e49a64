"""Deterministic splits and multi-task mixing. Pure functions, no I/O.

A split is chosen by hashing the example's content id with the seed, so an
example keeps its split when rows are added or removed around it (a
shuffle-then-cut split would move most rows whenever the data grows).

Mixing decides how many training examples each task contributes:

- ``proportional``: by size, scaled by each source's ``weight`` (default 1);
- ``equal``: the same count per task;
- ``temperature``: by size^(1/T) (T=1 is proportional, large T tends to equal).

The total stays the sum of the tasks' sizes; a task asked for more rows than
it has is repeated (upsampled), one with fewer is subsampled.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from typing import Literal, TypeVar

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")

T = TypeVar("T")


def unit_hash(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``key`` and ``seed``."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, seed: int, validation: float, test: float) -> SplitName:
    """Which split the example with content id ``key`` belongs to."""
    u = unit_hash(key, seed)
    if u < test:
        return "test"
    if u < test + validation:
        return "validation"
    return "train"


def mix_counts(
    sizes: Mapping[str, int],
    strategy: Literal["proportional", "equal", "temperature"],
    *,
    temperature: float = 2.0,
    weights: Mapping[str, float | None] | None = None,
) -> dict[str, int]:
    """How many training examples each task contributes; the counts sum to sum(sizes)."""
    tasks = [t for t, n in sizes.items() if n > 0]
    total = sum(sizes[t] for t in tasks)
    if not tasks:
        return {t: 0 for t in sizes}
    if strategy == "equal":
        raw = {t: 1.0 for t in tasks}
    elif strategy == "temperature":
        raw = {t: sizes[t] ** (1.0 / temperature) for t in tasks}
    else:
        w = weights or {}
        raw = {t: sizes[t] * (w.get(t) or 1.0) for t in tasks}
    norm = sum(raw.values())
    exact = {t: total * raw[t] / norm for t in tasks}
    counts = {t: int(exact[t]) for t in tasks}
    # Largest remainder: hand out what rounding down left, biggest fractions first.
    left = total - sum(counts.values())
    for t in sorted(tasks, key=lambda t: (-(exact[t] - counts[t]), t))[:left]:
        counts[t] += 1
    return {t: counts.get(t, 0) for t in sizes}


def take(items: Sequence[T], count: int, seed: int) -> list[T]:
    """``count`` items in a seeded order: a subsample, or whole passes plus a subsample."""
    if not items or count <= 0:
        return []
    order = list(items)
    random.Random(seed).shuffle(order)
    full, rest = divmod(count, len(order))
    return order * full + order[:rest]


def replay_count(train_size: int, ratio: float) -> int:
    """Replay rows to add so they make up ``ratio`` of the final training set."""
    return round(train_size * ratio / (1.0 - ratio))


def shuffled(items: Sequence[T], seed: int) -> list[T]:
    order = list(items)
    random.Random(seed).shuffle(order)
    return order
