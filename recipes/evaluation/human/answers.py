"""The items raters see: the recorded test split's prompts and each side's greedy answers.

The test split is the one the version was trained and evaluated with: the recipe text
stored with it, read against its workspace, split by the same code and seed, after
checking that every data file still has the digest recorded with the version (else the
split could differ, and the error says which file changed). Answers come from
:func:`recipes.evaluation.evaluate.generate` (greedy, ``max_new_tokens`` bounded), the
same decoding the registration metrics used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recipes.core.errors import RegError
from recipes.evaluation.evaluate import GenerationCase, generate, generation_cases
from recipes.evaluation.human.sheets import Item
from recipes.loading.recipe import LoadedRecipe


def changed_data(loaded: LoadedRecipe, recorded: Mapping[str, str]) -> list[str]:
    """Data files whose digest differs from ``recorded`` (or that are gone); pure but I/O."""
    from recipes.identity import file_digest

    out: list[str] = []
    for rel in loaded.data_refs():
        path = loaded.resolve(rel)
        now = file_digest(path) if path.is_file() else None
        if rel in recorded and now != recorded[rel]:
            out.append(f"{rel} ({'missing' if now is None else 'changed'})")
    return out


def recorded_test_cases(loaded: LoadedRecipe, recorded_digests: Mapping[str, str], limit: int,
               ref: str) -> list[GenerationCase]:
    """Up to ``limit`` test rows with a reference answer, as split when ``ref`` was trained."""
    from recipes.data.pipeline import load_base_tokenizer, prepare_data

    changed = changed_data(loaded, recorded_digests)
    if changed:
        raise RegError(
            f"the data {ref} was trained on has changed since: {', '.join(changed)}; its test "
            "split cannot be rebuilt as recorded",
            hint="restore those files (git checkout), or evaluate a version trained on the "
            "data as it is now")
    data = prepare_data(loaded, load_base_tokenizer(loaded))
    test = data.splits.get("test")
    cases = [] if test is None else generation_cases(data.kind, test, limit)
    if not cases:
        raise RegError(f"{ref} has no test rows with an answer to show raters",
                       hint="give the recipe a test split (spec.data.split.test) and train again")
    return cases


def shown_prompt(case: GenerationCase) -> str:
    """The conversation as a rater reads it: earlier turns labelled, the last one as is."""
    turns = [m for m in case.prompt if m.get("role") != "system"]
    if len(turns) == 1:
        return str(turns[0].get("content", ""))
    return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in turns)


def load_model(base_dir: Path, adapter_dir: Path | None, method: str) -> Any:
    """The base model, with ``adapter_dir``'s adapter (or, for method full, that model)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.float32, "trust_remote_code": False,
                              "use_safetensors": True}
    if adapter_dir is not None and method == "full":
        return AutoModelForCausalLM.from_pretrained(str(adapter_dir), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), **kwargs)
    if adapter_dir is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)


def answers(base_dir: Path, adapter_dir: Path | None, method: str,
            cases: Sequence[GenerationCase], max_new_tokens: int) -> list[str]:
    """Greedy answers of one side (a version, or the base when ``adapter_dir`` is None)."""
    from recipes.schema import BaseModelSpec
    from recipes.training.model import load_tokenizer

    tok_dir = adapter_dir if adapter_dir is not None and (
        adapter_dir / "tokenizer.json").is_file() else base_dir
    tokenizer = load_tokenizer(BaseModelSpec(path=str(tok_dir)), tok_dir)
    model = load_model(base_dir, adapter_dir, method)
    outputs, _, _ = generate(model, tokenizer, cases, max_new_tokens)
    del model
    return outputs


def items(cases: Sequence[GenerationCase], candidate: Sequence[str],
          other: Sequence[str]) -> list[Item]:
    width = len(str(len(cases)))
    return [Item(f"item-{i:0{width}d}", shown_prompt(c), a, b)
            for i, (c, a, b) in enumerate(zip(cases, candidate, other, strict=True), 1)]
