"""Turn clean examples into training rows with the base model's tokenizer.

- chat (sft): rendered with the tokenizer's chat template; ``labels`` keep the
  assistant's tokens (its content and end-of-turn token) and mask everything
  else with -100, so the loss is on completions only.
- preference (dpo): trl's conversational form, ``prompt`` / ``chosen`` /
  ``rejected`` message lists; trl tokenizes them itself.
- text (cpt): the text's tokens plus the end-of-sequence token.

Assistant tokens come from the template's ``{% generation %}`` marks when it
has them (exact); otherwise from character offsets of each assistant turn,
found by rendering the conversation prefix by prefix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recipes.core.errors import DataError
from recipes.data.load import Example, Message

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
_GENERATION_MARK = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class Tokenized:
    """An example's tokens before truncation, and how long its prompt is."""

    example: Example
    id: str
    input_ids: list[int]
    labels: list[int] | None  # chat only
    prompt_tokens: int  # tokens before the first one the model learns

    @property
    def length(self) -> int:
        return len(self.input_ids)


def check_chat_template(tokenizer: PreTrainedTokenizerBase, model: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"the base model's tokenizer ({model}) has no chat template",
            hint="use a chat model, or add chat_template to its tokenizer_config.json "
            "(or chat_template.jinja)",
        )


def has_generation_marks(tokenizer: PreTrainedTokenizerBase) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and _GENERATION_MARK.search(template) is not None


def _template_ids(tokenizer: PreTrainedTokenizerBase, messages: list[Message], *,
                  generation_prompt: bool = False) -> list[int]:
    # Typed as a union of every return form; with return_dict it is a mapping.
    enc: Any = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt)
    return [int(i) for i in enc["input_ids"]]


def render(tokenizer: PreTrainedTokenizerBase, messages: list[Message], *,
           generation_prompt: bool = False) -> str:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt)
    return str(text)


def assistant_mask(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> tuple[
    list[int], list[int]
]:
    """Token ids of the rendered chat and a 0/1 mask of the assistant's tokens."""
    if has_generation_marks(tokenizer):
        enc: Any = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        return [int(i) for i in enc["input_ids"]], [int(m) for m in enc["assistant_masks"]]
    return _mask_by_offsets(tokenizer, messages)


def _mask_by_offsets(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> tuple[
    list[int], list[int]
]:
    full = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], generation_prompt=True)
        through = render(tokenizer, messages[: i + 1])
        if not (full.startswith(through) and through.startswith(before)):
            raise DataError(
                "cannot find the assistant's turns in the base model's chat template "
                "(rendering is not prefix-stable)",
                hint="add {% generation %} ... {% endgeneration %} around assistant content "
                "in the template",
            )
        # The turn's trailing whitespace after the end token is not the model's to learn.
        end = len(before) + len(through[len(before):].rstrip())
        spans.append((len(before), end))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(i) for i in enc["input_ids"]]
    mask = [int(any(a <= s < b for a, b in spans)) for s, _ in enc["offset_mapping"]]
    return ids, mask


def tokenize_chat(tokenizer: PreTrainedTokenizerBase, ex: Example, ex_id: str) -> Tokenized:
    ids, mask = assistant_mask(tokenizer, ex.messages)
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]
    first = next((i for i, m in enumerate(mask) if m), len(ids))
    return Tokenized(ex, ex_id, ids, labels, first)


def tokenize_preference(tokenizer: PreTrainedTokenizerBase, ex: Example, ex_id: str) -> Tokenized:
    """Counts only (trl tokenizes DPO rows): the prompt, and the longer of the two answers."""
    prompt = _template_ids(tokenizer, ex.messages, generation_prompt=True)
    longest = max(
        (_template_ids(tokenizer, [*ex.messages, {"role": "assistant", "content": a}])
         for a in (ex.chosen, ex.rejected)),
        key=len,
    )
    return Tokenized(ex, ex_id, longest, None, len(prompt))


def tokenize_text(tokenizer: PreTrainedTokenizerBase, ex: Example, ex_id: str) -> Tokenized:
    ids = [int(i) for i in tokenizer(ex.text, add_special_tokens=False)["input_ids"]]
    eos = tokenizer.eos_token_id
    if isinstance(eos, int):
        ids.append(eos)  # documents stay apart when packed
    return Tokenized(ex, ex_id, ids, None, 0)


def tokenize(tokenizer: PreTrainedTokenizerBase, ex: Example, ex_id: str) -> Tokenized:
    if ex.kind == "chat":
        return tokenize_chat(tokenizer, ex, ex_id)
    if ex.kind == "preference":
        return tokenize_preference(tokenizer, ex, ex_id)
    return tokenize_text(tokenizer, ex, ex_id)


BATCH = 256


def tokenize_many(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
                  ids: Sequence[str]) -> list[Tokenized]:
    """:func:`tokenize` over many examples; chats go through the template in batches,
    which lets the fast tokenizer encode them together (several times faster)."""
    if not examples or examples[0].kind != "chat" or not has_generation_marks(tokenizer):
        return [tokenize(tokenizer, ex, i) for ex, i in zip(examples, ids, strict=True)]
    out: list[Tokenized] = []
    for start in range(0, len(examples), BATCH):
        chunk = examples[start:start + BATCH]
        enc: Any = tokenizer.apply_chat_template(
            [ex.messages for ex in chunk], tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True)
        for j, ex in enumerate(chunk):
            tok_ids = [int(t) for t in enc["input_ids"][j]]
            mask = [int(m) for m in enc["assistant_masks"][j]]
            labels = [t if m else IGNORE_INDEX for t, m in zip(tok_ids, mask, strict=True)]
            first = next((k for k, m in enumerate(mask) if m), len(tok_ids))
            out.append(Tokenized(ex, ids[start + j], tok_ids, labels, first))
    return out


def to_row(tok: Tokenized, max_seq_length: int, *, truncate_text: bool = True) -> dict[str, Any]:
    """The training row of one example (see the module docstring for each kind)."""
    ex = tok.example
    base: dict[str, Any] = {"id": tok.id, "source": ex.source}
    if ex.kind == "preference":
        return {
            **base,
            "prompt": [dict(m) for m in ex.messages],
            "chosen": [{"role": "assistant", "content": ex.chosen}],
            "rejected": [{"role": "assistant", "content": ex.rejected}],
        }
    if ex.kind == "chat":
        ids = tok.input_ids[:max_seq_length]
        labels = (tok.labels or [])[:max_seq_length]
        return {**base, "messages": [dict(m) for m in ex.messages], "input_ids": ids,
                "attention_mask": [1] * len(ids), "labels": labels}
    ids = tok.input_ids[:max_seq_length] if truncate_text else tok.input_ids
    return {**base, "text": ex.text, "input_ids": ids, "attention_mask": [1] * len(ids)}


def row_length(row: dict[str, Any], tok: Tokenized, max_seq_length: int) -> int:
    if "input_ids" in row:
        return len(row["input_ids"])
    return min(tok.length, max_seq_length)


def features(kind: str) -> Any:
    """The ``datasets.Features`` of each kind's rows, so even an empty split has its columns."""
    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    ids = List(Value("int64"))
    base = {"id": Value("string"), "source": Value("string")}
    if kind == "chat":
        return Features({**base, "messages": List(message), "input_ids": ids,
                         "attention_mask": ids, "labels": ids})
    if kind == "preference":
        return Features({**base, "prompt": List(message), "chosen": List(message),
                         "rejected": List(message)})
    return Features({**base, "text": Value("string"), "input_ids": ids, "attention_mask": ids})
