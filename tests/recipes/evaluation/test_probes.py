"""recipes.evaluation.probes: greedy answers recorded for the engine's identity check."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.evaluation.probes import (
    Probe,
    ProbeSet,
    compare,
    read_probes,
    record_probes,
    write_probes,
)

CHAT = [{"role": "user", "content": "How do I reset my password?"}]


def probes(*answers: str) -> ProbeSet:
    return ProbeSet(probes=[Probe(messages=CHAT, answer=a) for a in answers])


@pytest.mark.parametrize(("answers", "matched", "message"), [
    pytest.param(["alpha reset", "alpha refund"], True, "2/2 probe answers equal", id="equal"),
    pytest.param([" alpha reset\n", "alpha refund"], True, "2/2", id="whitespace"),
    pytest.param(["alpha reset", "bravo refund"], False,
                 "probe 2: the artifact recorded 'alpha refund', the engine answered "
                 "'bravo refund'", id="one-differs"),
    pytest.param(["alpha reset"], False, "1 answers for 2 probes", id="missing"),
])
def test_compare(answers: list[str], matched: bool, message: str) -> None:
    ok, detail = compare(probes("alpha reset", "alpha refund"), answers)
    assert ok is matched
    assert message in detail


def test_probes_round_trip_and_old_artifacts_have_none(tmp_path: Path) -> None:
    assert read_probes(tmp_path) is None
    write_probes(tmp_path, probes("x"))
    assert read_probes(tmp_path) == probes("x")


def test_recorded_answers_are_the_models_greedy_ones(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    first = record_probes(model, tokenizer, [CHAT, CHAT[:1]], count=1, max_new_tokens=8)
    again = record_probes(model, tokenizer, [CHAT], count=1, max_new_tokens=8)
    assert len(first.probes) == 1 and first.max_tokens == 8
    assert first == again  # greedy: the same answer every time
