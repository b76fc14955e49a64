"""Splits by content hash and mixing counts: pure functions."""

from __future__ import annotations

from collections import Counter

import pytest

from recipes.data.split import mix_counts, replay_count, split_of, take


def _split_all(keys: list[str], seed: int = 0) -> dict[str, str]:
    return {k: split_of(k, seed, 0.1, 0.2) for k in keys}


def test_split_fractions_are_close() -> None:
    counts = Counter(_split_all([f"ex{i}" for i in range(10_000)]).values())
    assert abs(counts["validation"] / 10_000 - 0.1) < 0.02
    assert abs(counts["test"] / 10_000 - 0.2) < 0.02


def test_an_example_keeps_its_split_when_data_grows() -> None:
    small = _split_all([f"ex{i}" for i in range(500)])
    grown = _split_all([f"ex{i}" for i in range(5000)])
    assert all(grown[k] == v for k, v in small.items())


def test_seed_changes_the_assignment() -> None:
    keys = [f"ex{i}" for i in range(500)]
    assert _split_all(keys, 0) != _split_all(keys, 1)


@pytest.mark.parametrize(("strategy", "expected"), [
    pytest.param("proportional", {"big": 900, "small": 100}, id="proportional"),
    pytest.param("equal", {"big": 500, "small": 500}, id="equal"),
    pytest.param("temperature", {"big": 750, "small": 250}, id="temperature-2"),
])
def test_mix_counts(strategy: str, expected: dict[str, int]) -> None:
    assert mix_counts({"big": 900, "small": 100}, strategy,  # type: ignore[arg-type]
                      temperature=2.0) == expected


def test_mix_weights_scale_proportional_shares() -> None:
    counts = mix_counts({"a": 100, "b": 100}, "proportional", weights={"a": 3.0, "b": None})
    assert counts == {"a": 150, "b": 50}


def test_mix_counts_sum_to_the_total() -> None:
    counts = mix_counts({"a": 7, "b": 3, "c": 1}, "temperature", temperature=3.0)
    assert sum(counts.values()) == 11 and all(v > 0 for v in counts.values())


def test_take_subsamples_and_repeats_deterministically() -> None:
    items = list(range(10))
    assert take(items, 4, seed=1) == take(items, 4, seed=1)
    assert len(set(take(items, 4, seed=1))) == 4
    repeated = take(items, 25, seed=1)
    assert Counter(repeated) == Counter({i: 2 for i in items}) + Counter(take(items, 5, 1))


def test_replay_count() -> None:
    assert replay_count(90, 0.1) == 10
    assert replay_count(0, 0.5) == 0
