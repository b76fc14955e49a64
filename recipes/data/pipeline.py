"""The data pipeline: a recipe's data files in, training-ready splits out.

    load (datasets, local files) -> clean (normalise, PII, drop, dedupe)
    -> tokenize (base tokenizer; drop rows over clean.max_tokens)
    -> split (by content hash) -> mix tasks + replay (train only) -> rows

Training consumes :class:`PreparedData` directly; ``reg data`` prints its
report and writes the splits as JSONL. Every user-caused failure is a
:class:`~recipes.core.errors.DataError` naming the file (and row) with a hint.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recipes.core.errors import DataError, ModelError
from recipes.data.clean import CleanReport, clean_examples, content_id
from recipes.data.drift import build_reference
from recipes.data.format import (
    Tokenized,
    check_chat_template,
    features,
    render,
    row_length,
    to_row,
    tokenize_many,
)
from recipes.data.load import Example, Kind, kind_of, load_examples
from recipes.data.report import DataReport, SourceReport, TokenStats
from recipes.data.split import SPLITS, mix_counts, replay_count, shuffled, split_of, take
from recipes.data.write import write_prepared
from recipes.loading.loader import LoadedRecipe
from recipes.schema import DataFormat, FieldMap, Objective

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

OBJECTIVE_KIND: dict[Objective, Kind] = {
    Objective.sft: "chat", Objective.dpo: "preference", Objective.cpt: "text",
    Objective.reward: "preference", Objective.grpo: "chat",  # grpo: the prompt side
}


@dataclass
class PreparedData:
    """Training-ready splits (``train``, ``validation``, ``test``; any may be empty)."""

    kind: Literal["chat", "preference", "text"]
    splits: dict[str, datasets.Dataset]
    report: DataReport
    out_dir: Path | None = None


def load_base_tokenizer(loaded: LoadedRecipe) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, from local files only."""
    from transformers import AutoTokenizer

    base = loaded.recipe.spec.base_model
    path = loaded.base_model_path
    try:
        return AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=base.trust_remote_code, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the tokenizer of {path}: {e}",
                         hint="point base_model.path at a model folder with tokenizer files"
                         ) from e


def _shown(loaded: LoadedRecipe, rel: str) -> str:
    """A data path as people should read it: relative to the current folder when inside it."""
    try:
        path = loaded.resolve(rel)
    except ValueError as e:
        raise DataError(str(e), hint="keep data files inside the workspace") from e
    return shown_path(path)


def shown_path(path: Path) -> str:
    """A path as people read it: relative to the current folder when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _load_source(loaded: LoadedRecipe, rel: str, fmt: DataFormat, fields: FieldMap,
                 source: str, system_prompt: str) -> list[Example]:
    shown = _shown(loaded, rel)
    return load_examples(loaded.resolve(rel), shown, fmt=fmt, fields=fields, source=source,
                         system_prompt=system_prompt)


def _source_name(path: str, name: str | None) -> str:
    return name or Path(path).stem


def _tokenize_all(examples: list[Example], tokenizer: PreTrainedTokenizerBase,
                  max_tokens: int | None, report: CleanReport) -> list[Tokenized]:
    out: list[Tokenized] = []
    for tok in tokenize_many(tokenizer, examples, [content_id(ex) for ex in examples]):
        if max_tokens is not None and tok.length > max_tokens:
            report.drop(tok.example, "too_long")
            continue
        out.append(tok)
    return out


def _check_prompts_fit(toks: list[Tokenized], max_seq_length: int) -> None:
    """Rows whose prompt alone fills training.max_seq_length would train on nothing."""
    bad = [t for t in toks if t.example.kind != "text" and t.prompt_tokens >= max_seq_length]
    if not bad:
        return
    listed = "\n".join(f"{t.example.where}: prompt is {t.prompt_tokens} tokens"
                       for t in bad[:10])
    more = f"\n... and {len(bad) - 10} more" if len(bad) > 10 else ""
    raise DataError(
        f"{len(bad)} example(s) have a prompt of training.max_seq_length ({max_seq_length}) "
        f"tokens or more, leaving nothing to learn:\n{listed}{more}",
        hint=f"raise training.max_seq_length above {max(t.prompt_tokens for t in bad)}, or "
        f"set data.clean.max_tokens to at most {max_seq_length} to drop long rows",
    )


def _empty_error(files: list[str], report: CleanReport, max_tokens: int | None) -> DataError:
    reasons = ", ".join(f"{k}: {v}" for k, v in report.removed.most_common())
    top = report.removed.most_common(1)[0][0] if report.removed else None
    hints = {
        "too_long": f"raise data.clean.max_tokens (now {max_tokens}) or shorten the rows",
        "short_output": "lower data.clean.min_output_chars",
        "repetition": "raise data.clean.max_repetition_ratio",
        "duplicate": "add distinct rows (or set data.clean.dedupe: false)",
    }
    return DataError(
        f"no examples left in {', '.join(files)} after cleaning"
        + (f" (removed {reasons})" if reasons else " (the files have no rows)"),
        hint=hints.get(top or "", "add rows to the data files"),
    )


def _mix_train(train: list[Tokenized], loaded: LoadedRecipe, seed: int) -> tuple[
    list[Tokenized], dict[str, Any]
]:
    data = loaded.recipe.spec.data
    by_task: dict[str, list[Tokenized]] = {}
    for t in train:
        by_task.setdefault(t.example.source, []).append(t)
    sizes = {task: len(items) for task, items in by_task.items()}
    weights = {_source_name(s.path, s.name): s.weight for s in data.sources}
    counts = mix_counts(sizes, data.mix.strategy, temperature=data.mix.temperature,
                        weights=weights)
    mixed: list[Tokenized] = []
    for i, (task, items) in enumerate(sorted(by_task.items())):
        mixed.extend(take(items, counts[task], seed + i))
    info = {"strategy": data.mix.strategy, "temperature": data.mix.temperature,
            "before": sizes, "after": counts}
    return mixed, info


def _replay(loaded: LoadedRecipe, tokenizer: PreTrainedTokenizerBase, kind: Kind,
            train_size: int, seed: int) -> tuple[list[Tokenized], dict[str, Any] | None]:
    data = loaded.recipe.spec.data
    if data.replay is None:
        return [], None
    fmt = data.replay.format or data.format
    if kind_of(fmt) != kind:
        raise DataError(
            f"data.replay has format {fmt.value} ({kind_of(fmt)} rows) but this recipe trains "
            f"on {kind} rows",
            hint="set data.replay.format to a format of the same kind as data.format")
    examples = _load_source(loaded, data.replay.path, fmt, data.fields, "replay",
                            data.system_prompt or "")
    report = CleanReport()
    clean = clean_examples(examples, data.clean, report)
    toks = _tokenize_all(clean, tokenizer, data.clean.max_tokens, report)
    _check_prompts_fit(toks, loaded.recipe.spec.training.max_seq_length)
    wanted = replay_count(train_size, data.replay.ratio)
    chosen = take(toks, wanted, seed + 1_000_003) if toks else []
    info = {"path": _shown(loaded, data.replay.path), "ratio": data.replay.ratio,
            "rows": len(examples), "usable": len(toks), "added": len(chosen),
            "cleaning": report.to_json()}
    return chosen, info


def _stats(kind: Kind, toks: list[Tokenized], rows: list[dict[str, Any]],
           max_seq_length: int) -> TokenStats:
    lengths = [row_length(r, t, max_seq_length) for r, t in zip(rows, toks, strict=True)]
    labels = (sum(sum(1 for x in r["labels"] if x != -100) for r in rows)
              if kind == "chat" else None)
    truncated = sum(1 for t in toks if t.length > max_seq_length)
    return TokenStats.of(lengths, label_tokens=labels, truncated=truncated)


def _prompt_reference(toks: list[Tokenized], tokenizer: PreTrainedTokenizerBase
                      ) -> dict[str, Any]:
    """The task rows' prompts as the gateway will see them (recipes.data.drift): a chat or
    preference row's tokens before the first one the model learns, a text row's tokens
    without the end-of-sequence token added to keep packed documents apart."""
    eos = tokenizer.eos_token_id

    def prompt(t: Tokenized) -> list[int]:
        if t.example.kind != "text":
            return t.input_ids[: t.prompt_tokens]
        ids = t.input_ids
        return ids[:-1] if ids and isinstance(eos, int) and ids[-1] == eos else ids

    return build_reference((prompt(t) for t in toks),
                           lambda i: str(tokenizer.decode([i]))).to_json()


def prepare_data(loaded: LoadedRecipe, tokenizer: PreTrainedTokenizerBase,
                 out_dir: Path | None = None) -> PreparedData:
    """Load, clean, tokenize, split and mix a recipe's data; optionally write it to ``out_dir``.

    Nothing is written unless every step succeeds.
    """
    import datasets

    spec = loaded.recipe.spec
    data, training = spec.data, spec.training
    kind = OBJECTIVE_KIND[training.objective]
    seed = data.split.seed
    max_len = training.max_seq_length
    if kind != "text":
        check_chat_template(tokenizer, str(spec.base_model.path))

    report = DataReport(recipe=loaded.name, kind=kind, objective=training.objective.value,
                        max_seq_length=max_len)
    examples: list[Example] = []
    for src in data.sources:
        fmt = src.format or data.format
        name = _source_name(src.path, src.name)
        loaded_rows = _load_source(loaded, src.path, fmt, src.fields or data.fields, name,
                                   data.system_prompt or "")
        report.sources.append(SourceReport(name, _shown(loaded, src.path), fmt.value,
                                           len(loaded_rows)))
        examples.extend(loaded_rows)

    cleaning = CleanReport()
    clean = clean_examples(examples, data.clean, cleaning)
    toks = _tokenize_all(clean, tokenizer, data.clean.max_tokens, cleaning)
    report.cleaning = cleaning.to_json()
    if not toks:
        raise _empty_error([s.path for s in report.sources], cleaning, data.clean.max_tokens)
    _check_prompts_fit(toks, max_len)
    report.prompts = _prompt_reference(toks, tokenizer)
    kept = Counter(t.example.file for t in toks)
    for s in report.sources:
        s.kept = kept.get(s.path, 0)

    by_split: dict[str, list[Tokenized]] = {name: [] for name in SPLITS}
    for t in toks:
        by_split[split_of(t.id, seed, data.split.validation, data.split.test)].append(t)
    if not by_split["train"]:
        raise DataError(
            f"no training examples: all {len(toks)} example(s) fell in validation/test",
            hint="add data, or lower data.split.validation and data.split.test")

    train, report.mix = _mix_train(by_split["train"], loaded, seed)
    replay, report.replay = _replay(loaded, tokenizer, kind, len(train), seed)
    train = shuffled(train + replay, seed)
    if data.max_examples is not None:
        train = train[: data.max_examples]
    by_split["train"] = train
    report.split = {"seed": seed, "validation": data.split.validation, "test": data.split.test,
                    "max_examples": data.max_examples}

    # Continued pre-training packs unless the recipe turns packing off explicitly (as
    # training does), and packed text is split there, not truncated here.
    packs = training.packing or (training.objective is Objective.cpt
                                 and "packing" not in training.model_fields_set)
    truncate_text = not packs
    rows = {name: [to_row(t, max_len, truncate_text=truncate_text) for t in items]
            for name, items in by_split.items()}
    report.splits = {name: _stats(kind, by_split[name], rows[name], max_len) for name in SPLITS}

    feats = features(kind)
    splits: dict[str, datasets.Dataset] = {
        # from_list cannot build an empty table; from_dict with typed columns can.
        name: datasets.Dataset.from_list(rows[name], features=feats) if rows[name]
        else datasets.Dataset.from_dict({col: [] for col in feats}, features=feats)
        for name in SPLITS}
    written = write_prepared(out_dir, rows, report.to_json()) if out_dir is not None else None
    return PreparedData(kind=kind, splits=splits, report=report, out_dir=written)


def load_eval_texts(loaded: LoadedRecipe, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """evaluation.general rows as plain text (chats rendered with the chat template).

    Cleaned like the training data (normalised, PII redacted, duplicates
    dropped); at most evaluation.general.max_examples, in file order.
    """
    general = loaded.recipe.spec.evaluation.general
    if general is None:
        return []
    data = loaded.recipe.spec.data
    examples = _load_source(loaded, general.path, general.format, data.fields, "general", "")
    clean = clean_examples(examples, data.clean, CleanReport())
    texts: list[str] = []
    for ex in clean[: general.max_examples]:
        if ex.kind == "text":
            texts.append(ex.text)
            continue
        check_chat_template(tokenizer, str(loaded.recipe.spec.base_model.path))
        msgs = ex.messages if ex.kind == "chat" else [
            *ex.messages, {"role": "assistant", "content": ex.chosen}]
        texts.append(render(tokenizer, msgs))
    return texts


__all__ = ["PreparedData", "load_base_tokenizer", "load_eval_texts",
           "prepare_data"]
