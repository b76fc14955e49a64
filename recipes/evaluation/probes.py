"""Identity probes: greedy answers recorded at training, compared with the engine's later.

Runtime LoRA loading can serve the wrong weights (an in-flight request answered with
another adapter, stale prefix-cache blocks under a reused name). So the artifact
records, with transformers, the greedy answers of the tuned model to a few prompts of
its own test split (``probes.json``); before a version receives traffic, and after
every engine restart, the rollout controller asks the engine the same prompts pinned
to that version and compares (:func:`compare`). A mismatch keeps the version from
users, with both answers in the event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from recipes.core.fsutil import atomic_write_text

PROBES_FILE = "probes.json"
PROBE_COUNT = 3
PROBE_MAX_TOKENS = 16


class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[dict[str, str]]  # the chat, as /v1/chat/completions takes it
    answer: str  # the tuned model's greedy answer, stripped


class ProbeSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = PROBE_MAX_TOKENS
    probes: list[Probe]


def record_probes(model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict[str, str]]],
                  *, count: int = PROBE_COUNT,
                  max_new_tokens: int = PROBE_MAX_TOKENS) -> ProbeSet:
    """The tuned model's greedy answers to the first ``count`` of ``prompts``."""
    from recipes.evaluation.evaluate import GenerationCase, generate

    cases = [GenerationCase([dict(m) for m in p], "") for p in list(prompts)[:count]]
    answers, _, _ = generate(model, tokenizer, cases, max_new_tokens)
    return ProbeSet(max_tokens=max_new_tokens,
                    probes=[Probe(messages=c.prompt, answer=a)
                            for c, a in zip(cases, answers, strict=True)])


def write_probes(directory: Path, probes: ProbeSet) -> Path:
    path = directory / PROBES_FILE
    atomic_write_text(path, probes.model_dump_json(indent=2) + "\n")
    return path


def read_probes(directory: Path) -> ProbeSet | None:
    """The artifact's probes, or None for an artifact made before probes existed."""
    path = directory / PROBES_FILE
    if not path.is_file():
        return None
    return ProbeSet.model_validate(json.loads(path.read_text()))


def compare(expected: ProbeSet, answers: Sequence[str]) -> tuple[bool, str]:
    """Whether the engine's ``answers`` equal the recorded ones, and a sentence saying so."""
    if len(answers) != len(expected.probes):
        return False, f"{len(answers)} answers for {len(expected.probes)} probes"
    wrong = [(i, p.answer, got.strip()) for i, (p, got) in
             enumerate(zip(expected.probes, answers, strict=True)) if p.answer != got.strip()]
    if not wrong:
        return True, f"{len(answers)}/{len(answers)} probe answers equal the artifact's"
    i, want, got = wrong[0]
    return False, (f"{len(wrong)}/{len(answers)} probe answers differ; probe {i + 1}: "
                   f"the artifact recorded {want!r}, the engine answered {got!r}")
