"""The drift reference and PSI (recipes.data.drift): bins, hand-checked scores, the reference
the pipeline records, and that the gateway's tokenising of a request gives the same prompts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recipes.data.drift import (
    EPSILON,
    LENGTH_EDGES,
    TOP_TOKENS,
    BadReference,
    Bins,
    PromptReference,
    build_reference,
    length_labels,
    psi,
    verdict,
)
from recipes.data.pipeline import prepare_data
from recipes.loading.loader import load_recipe
from serving.gateway.drift import prompt_ids
from serving.gateway.prompt_tokens import PromptTokenizer

# ---- bins ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "index"), [
    pytest.param(0, 0, id="empty"), pytest.param(1, 0, id="one"), pytest.param(2, 1, id="two"),
    pytest.param(3, 1, id="three"), pytest.param(63, 5, id="63"), pytest.param(64, 6, id="64"),
    pytest.param(8191, 12, id="below-last"), pytest.param(10**6, 13, id="beyond-last"),
])
def test_length_bins_are_powers_of_two(length: int, index: int) -> None:
    bins = Bins(LENGTH_EDGES, [])
    assert bins.length_bin(length) == index
    counts = bins.length_counts([length])
    assert counts.tolist() == [int(i == index) for i in range(len(LENGTH_EDGES))]
    assert length_labels(LENGTH_EDGES)[index] in ("0-1", "2-3", "32-63", "64-127",
                                                  "4096-8191", "8192+")


def test_token_bins_count_each_reference_id_and_the_rest_as_other() -> None:
    bins = Bins(LENGTH_EDGES, [7, 3, 500])  # the reference's order: 7, 3, 500, then other
    assert bins.token_counts([3, 3, 7, 9, 500, 1000, 3]).tolist() == [1, 3, 1, 2]
    assert bins.token_counts([]).tolist() == [0, 0, 0, 0]
    assert Bins(LENGTH_EDGES, []).token_counts([1, 2]).tolist() == [2]


# ---- psi ---------------------------------------------------------------------------------------


def test_identical_distributions_score_zero() -> None:
    c = psi([10, 20, 30, 0], [1, 2, 3, 0])  # the same shares at another scale
    assert c is not None
    assert c.psi == pytest.approx(0.0, abs=1e-12)
    assert verdict(c.psi) == "stable"


def test_a_known_shift_scores_the_formula() -> None:
    c = psi([50, 50], [90, 10])
    expected = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    assert c is not None
    assert c.psi == pytest.approx(expected)
    assert c.psi == pytest.approx(0.8789, abs=1e-4)  # 0.4 ln 1.8 + 0.4 ln 5
    assert verdict(c.psi) == "significant"
    assert c.terms[0] == pytest.approx(0.4 * math.log(1.8))


def test_an_empty_bin_counts_as_epsilon() -> None:
    c = psi([100, 0], [50, 50])
    assert c is not None
    terms = [(0.5 - 1.0) * math.log(0.5 / 1.0), (0.5 - EPSILON) * math.log(0.5 / EPSILON)]
    assert c.psi == pytest.approx(sum(terms))
    assert c.expected == (1.0, 0.0)  # proportions are reported before the floor


@pytest.mark.parametrize(("value", "reading"), [
    pytest.param(0.0999, "stable", id="stable"), pytest.param(0.1, "moderate", id="low-edge"),
    pytest.param(0.25, "moderate", id="high-edge"),
    pytest.param(0.2501, "significant", id="significant"),
])
def test_the_usual_reading(value: float, reading: str) -> None:
    assert verdict(value) == reading


def test_no_samples_is_no_score_and_mismatched_bins_are_refused() -> None:
    assert psi([1, 2], [0, 0]) is None
    with pytest.raises(ValueError, match="bins differ: 2 expected, 3 actual"):
        psi([1, 2], [1, 2, 3])


# ---- the reference ---------------------------------------------------------------------------


def test_reference_keeps_the_most_frequent_ids_and_round_trips() -> None:
    prompts = [[5, 5, 5, 1], [1, 2], [9] * 40]
    ref = build_reference(prompts, lambda i: f"<{i}>")
    assert ref.prompts == 3 and ref.tokens == 46
    assert ref.token_ids == (9, 5, 1, 2)  # by count, ties by id
    assert ref.token_counts == (40, 3, 2, 1, 0)
    assert ref.length_counts[2] == 1 and ref.length_counts[1] == 1  # lengths 4 and 2
    assert ref.length_counts[5] == 1  # 40 in 32-63
    assert PromptReference.parse(ref.to_json(), "x") == ref
    many = build_reference([list(range(100))], str)
    assert len(many.token_ids) == TOP_TOKENS
    assert many.token_counts[-1] == 100 - TOP_TOKENS


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"scheme": 9}, "prompts.scheme is 9", id="scheme"),
    pytest.param({"length_counts": [1]}, "prompts.length_counts does not match", id="lengths"),
    pytest.param({"token_counts": [1, 2]}, "prompts.token_counts is not one count", id="tokens"),
    pytest.param({"token_ids": ["a"]}, "prompts.token_ids is not a list of counts", id="ids"),
])
def test_a_malformed_reference_names_its_field(change: dict[str, Any], message: str) -> None:
    data = {**build_reference([[1, 2, 3]], str).to_json(), **change}
    with pytest.raises(BadReference, match=f"v3 report: {message}"):
        PromptReference.parse(data, "v3 report")


def test_the_pipeline_records_what_the_gateway_will_tokenise(
        workspace: Path, tokenizer: Any, tiny_model_dir: Path) -> None:
    """The data report's reference (transformers' tokenizer, as training has it), and the
    same conversations tokenised as the gateway tokenises a chat request, without
    transformers and without their answers: the same bins, PSI 0."""
    loaded = load_recipe(workspace / "recipes" / "support-bot.yaml")
    prepared = prepare_data(loaded, tokenizer)
    gateway = PromptTokenizer.load(str(tiny_model_dir))
    assert prepared.report.prompts is not None
    ref = PromptReference.parse(prepared.report.prompts, "report")
    rows = [r for split in prepared.splits.values() for r in split]
    assert ref.prompts == len(rows) > 0
    bins = ref.bins
    lengths = np.zeros(bins.length_bins, dtype=np.int64)
    tokens = np.zeros(bins.token_bins, dtype=np.int64)
    for row in rows:
        asked = [m for m in row["messages"] if m["role"] != "assistant"]
        (ids,) = prompt_ids(gateway, "chat", {"messages": asked})
        lengths[bins.length_bin(len(ids))] += 1
        tokens += bins.token_counts(ids)
    assert tokens.tolist() == list(ref.token_counts)
    assert lengths.tolist() == list(ref.length_counts)
    for got, want in ((lengths, ref.length_counts), (tokens, ref.token_counts)):
        c = psi(want, got)
        assert c is not None and c.psi == pytest.approx(0.0, abs=1e-12)
