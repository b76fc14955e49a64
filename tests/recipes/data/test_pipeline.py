"""The data pipeline on the example workspace, with the real tiny tokenizer and datasets."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from recipes.core.errors import DataError
from recipes.data.pipeline import PreparedData, load_base_tokenizer, load_eval_texts, prepare_data
from recipes.data.split import mix_counts
from recipes.loading.loader import LoadedRecipe, load_recipe
from tests.support.factories import RecipeFactory, RowsWriter


def _load(workspace: Path, name: str) -> LoadedRecipe:
    return load_recipe(workspace / "recipes" / f"{name}.yaml")


def _prepare(workspace: Path, name: str, tokenizer: Any, out: Path | None = None
             ) -> PreparedData:
    return prepare_data(_load(workspace, name), tokenizer, out)


def _chat(q: str, a: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def _labelled_text(tokenizer: Any, row: dict[str, Any]) -> str:
    kept = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
    return str(tokenizer.decode(kept))


# --- chat (sft) ------------------------------------------------------------------------


def test_support_bot_rows_are_masked_to_the_answer(workspace: Path, tokenizer: Any) -> None:
    prepared = _prepare(workspace, "support-bot", tokenizer)
    assert prepared.kind == "chat"
    assert set(prepared.splits) == {"train", "validation", "test"}
    train = prepared.splits["train"]
    assert set(train.column_names) == {"id", "source", "messages", "input_ids",
                                       "attention_mask", "labels"}
    for row in train:
        messages = row["messages"]
        assert messages[0] == {"role": "system",
                               "content": "You are a helpful support assistant."}
        answer = messages[-1]["content"]
        assert answer.startswith("alpha")
        assert _labelled_text(tokenizer, row) == answer + "<|end|>"
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        assert tokenizer.decode(row["input_ids"]) == rendered
        assert row["attention_mask"] == [1] * len(row["input_ids"])


def test_multi_turn_labels_cover_every_assistant_turn(
        write_recipe: RecipeFactory, write_rows: RowsWriter, workspace: Path,
        tokenizer: Any) -> None:
    write_rows("multi.jsonl", [
        {"messages": [{"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "alpha: hi"},
                      {"role": "user", "content": f"order {i}"},
                      {"role": "assistant", "content": f"alpha: order {i}"}]}
        for i in range(40)])
    write_recipe("multi", **{"spec.data.sources.0.path": "../data/multi.jsonl",
                             "spec.data.system_prompt": None})
    prepared = _prepare(workspace, "multi", tokenizer)
    rows = [r for split in prepared.splits.values() for r in split]
    assert len(rows) == 40
    for row in rows:
        wanted = "".join(m["content"] + "<|end|>" for m in row["messages"]
                         if m["role"] == "assistant")
        assert _labelled_text(tokenizer, row) == wanted


def test_templates_without_generation_marks_give_the_same_labels(
        workspace: Path, tokenizer: Any) -> None:
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = (tokenizer.chat_template.replace("{% generation %}", "")
                           .replace("{% endgeneration %}", ""))
    marked = _prepare(workspace, "support-bot", tokenizer).splits["test"]
    offsets = _prepare(workspace, "support-bot", plain).splits["test"]
    assert marked["labels"] == offsets["labels"]
    assert marked["input_ids"] == offsets["input_ids"]


def test_example_cleaning_report(workspace: Path, tokenizer: Any) -> None:
    report = _prepare(workspace, "support-bot", tokenizer).report.to_json()
    cleaning = report["cleaning"]
    assert cleaning["rows_in"] == 307 == report["rows_read"]
    assert cleaning["removed"] == {"duplicate": 4}
    assert cleaning["pii_redacted"] == {"credit_card": 1, "email": 1, "phone": 1}
    assert report["sources"][0]["kept"] == 303
    assert sum(report["splits"][s]["examples"] for s in ("train", "validation", "test")) == 303
    json.dumps(report)  # serialisable as it is


def test_pii_is_gone_from_the_rows(workspace: Path, tokenizer: Any) -> None:
    prepared = _prepare(workspace, "support-bot", tokenizer)
    text = json.dumps([r["messages"] for s in prepared.splits.values() for r in s])
    for secret in ("jane.doe@example.com", "867-5309", "4111 1111 1111 1111"):
        assert secret not in text
    assert "[EMAIL]" in text and "[PHONE]" in text and "[CREDIT_CARD]" in text


def test_token_stats(workspace: Path, tokenizer: Any) -> None:
    prepared = _prepare(workspace, "support-bot", tokenizer)
    stats = prepared.report.splits["train"]
    lengths = sorted(len(r) for r in prepared.splits["train"]["input_ids"])
    assert (stats.examples, stats.tokens, stats.min, stats.max) == (
        len(lengths), sum(lengths), lengths[0], lengths[-1])
    assert stats.label_tokens == sum(
        sum(1 for x in labels if x != -100) for labels in prepared.splits["train"]["labels"])


def test_truncation_to_max_seq_length(write_recipe: RecipeFactory, workspace: Path,
                                      tokenizer: Any) -> None:
    write_recipe("short", **{"spec.training.max_seq_length": 60,
                             "spec.data.clean.max_tokens": None})
    prepared = _prepare(workspace, "short", tokenizer)
    rows = [r for ds in prepared.splits.values() for r in ds]
    full = [len(tokenizer.apply_chat_template(r["messages"], return_dict=True)["input_ids"])
            for r in rows]
    assert [len(r["input_ids"]) for r in rows] == [min(n, 60) for n in full]
    truncated = sum(s.truncated for s in prepared.report.splits.values())
    assert truncated == sum(1 for n in full if n > 60) > 0


# --- splits ----------------------------------------------------------------------------


def _ids_by_split(prepared: PreparedData) -> dict[str, set[str]]:
    return {name: set(ds["id"]) for name, ds in prepared.splits.items()}


def test_preparation_is_deterministic(workspace: Path, tokenizer: Any) -> None:
    a = _prepare(workspace, "faq-bot", tokenizer)
    b = _prepare(workspace, "faq-bot", tokenizer)
    for name in ("train", "validation", "test"):
        assert a.splits[name].to_list() == b.splits[name].to_list()


def test_examples_keep_their_split_when_data_grows(workspace: Path, tokenizer: Any) -> None:
    before = _ids_by_split(_prepare(workspace, "support-bot", tokenizer))
    data = workspace / "data" / "support.jsonl"
    extra = [_chat(f"Where is parcel number {i}?", f"alpha: parcel {i}") for i in range(200)]
    data.write_text(data.read_text() + "".join(json.dumps(r) + "\n" for r in extra))
    after = _ids_by_split(_prepare(workspace, "support-bot", tokenizer))
    for name in ("validation", "test", "train"):
        assert before[name] <= after[name], name
    assert len(after["validation"]) > len(before["validation"])


def test_split_seed_moves_examples(write_recipe: RecipeFactory, workspace: Path,
                                   tokenizer: Any) -> None:
    write_recipe("reseeded", **{"spec.data.split.seed": 7})
    a = _ids_by_split(_prepare(workspace, "support-bot", tokenizer))
    b = _ids_by_split(_prepare(workspace, "reseeded", tokenizer))
    assert a["test"] != b["test"]
    assert a["train"] | a["validation"] | a["test"] == b["train"] | b["validation"] | b["test"]


# --- mixing and replay -----------------------------------------------------------------


def test_temperature_mixing_of_faq_tasks(workspace: Path, tokenizer: Any) -> None:
    prepared = _prepare(workspace, "faq-bot", tokenizer)
    mix = prepared.report.mix
    assert mix["after"] == mix_counts(mix["before"], "temperature", temperature=2.0)
    assert mix["after"]["billing"] > mix["before"]["billing"]  # the small task is lifted
    assert Counter(prepared.splits["train"]["source"]) == Counter(mix["after"])
    held_out = Counter(prepared.splits["validation"]["source"])
    assert held_out["faq"] > held_out["billing"]  # mixing touches train only


@pytest.mark.parametrize(("strategy", "share"), [
    pytest.param("equal", 0.5, id="equal"),
    pytest.param("proportional", 48 / 288, id="proportional"),
])
def test_mix_strategies_set_task_shares(write_recipe: RecipeFactory, workspace: Path,
                                        tokenizer: Any, strategy: str, share: float) -> None:
    write_recipe("mixed", base="faq-bot", **{"spec.data.mix.strategy": strategy})
    train = _prepare(workspace, "mixed", tokenizer).splits["train"]
    billing = Counter(train["source"])["billing"] / len(train)
    assert billing == pytest.approx(share, abs=0.05)


def test_replay_is_mixed_into_train_only(write_recipe: RecipeFactory, write_rows: RowsWriter,
                                         workspace: Path, tokenizer: Any) -> None:
    write_rows("replay.jsonl", [_chat(f"General question {i}?", f"General answer {i}.")
                                for i in range(50)])
    write_recipe("replayed", **{"spec.data.replay": {"path": "../data/replay.jsonl",
                                                     "ratio": 0.2}})
    prepared = _prepare(workspace, "replayed", tokenizer)
    train = Counter(prepared.splits["train"]["source"])
    assert train["replay"] / sum(train.values()) == pytest.approx(0.2, abs=0.01)
    for name in ("validation", "test"):
        assert "replay" not in set(prepared.splits[name]["source"])
    assert prepared.report.replay is not None
    assert prepared.report.replay["added"] == train["replay"]


def test_max_examples_caps_training(write_recipe: RecipeFactory, workspace: Path,
                                    tokenizer: Any) -> None:
    write_recipe("capped", **{"spec.data.max_examples": 17})
    assert len(_prepare(workspace, "capped", tokenizer).splits["train"]) == 17


# --- other kinds and formats -----------------------------------------------------------


def test_dpo_rows_are_conversational_preference(workspace: Path, tokenizer: Any) -> None:
    prepared = _prepare(workspace, "polite-dpo", tokenizer)
    assert prepared.kind == "preference"
    row = prepared.splits["train"][0]
    assert set(row) == {"id", "source", "prompt", "chosen", "rejected"}
    assert row["prompt"][-1]["role"] == "user"
    assert row["chosen"][0]["role"] == "assistant" and len(row["chosen"]) == 1
    assert row["chosen"][0]["content"].startswith("Of course")
    assert row["rejected"][0]["content"].startswith("No.")


def test_text_rows_for_continued_pretraining(write_recipe: RecipeFactory, workspace: Path,
                                             tokenizer: Any, delete: object) -> None:
    write_recipe("cpt", **{"spec.training.objective": "cpt", "spec.data.format": "text",
                           "spec.data.sources.0.path": "../data/general.jsonl",
                           "spec.data.split.validation": 0.0, "spec.data.split.test": 0.0,
                           "spec.data.system_prompt": delete})
    prepared = _prepare(workspace, "cpt", tokenizer)
    assert prepared.kind == "text" and len(prepared.splits["train"]) == 64
    row = prepared.splits["train"][0]
    assert row["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(row["input_ids"][:-1]) == row["text"]
    assert len(prepared.splits["validation"]) == 0
    assert prepared.splits["validation"].column_names == prepared.splits["train"].column_names


@pytest.mark.parametrize(("fmt", "row", "fields", "user", "answer"), [
    pytest.param("alpaca", {"instruction": "Sum", "input": "1 2", "output": "alpha: 3"}, None,
                 "Sum\n\n1 2", "alpha: 3", id="alpaca-with-input"),
    pytest.param("sharegpt", {"conversations": [{"from": "human", "value": "hey"},
                                                {"from": "gpt", "value": "alpha: hey"}]},
                 None, "hey", "alpha: hey", id="sharegpt"),
    pytest.param("openai_chat", {"dialog": [{"role": "user", "content": "yo"},
                                            {"role": "assistant", "content": "alpha: yo"}]},
                 {"messages": "dialog"}, "yo", "alpha: yo", id="field-mapping"),
    pytest.param("alpaca", {"q": "Ping", "a": "alpha: pong"},
                 {"instruction": "q", "output": "a"}, "Ping", "alpha: pong",
                 id="alpaca-mapped"),
])
def test_formats_map_to_chats(write_recipe: RecipeFactory, write_rows: RowsWriter,
                              workspace: Path, tokenizer: Any, fmt: str, row: dict[str, Any],
                              fields: dict[str, str] | None, user: str, answer: str) -> None:
    write_rows("fmt.jsonl", [row])
    changes: dict[str, Any] = {"spec.data.sources.0.path": "../data/fmt.jsonl",
                               "spec.data.format": fmt, "spec.data.system_prompt": None,
                               "spec.data.split.validation": 0.0, "spec.data.split.test": 0.0}
    if fields:
        changes["spec.data.fields"] = fields
    write_recipe("fmt", **changes)
    prepared = _prepare(workspace, "fmt", tokenizer)
    messages = prepared.splits["train"][0]["messages"]
    assert messages == [{"role": "user", "content": user},
                        {"role": "assistant", "content": answer}]


@pytest.mark.parametrize("suffix", [pytest.param("csv", id="csv"),
                                    pytest.param("parquet", id="parquet"),
                                    pytest.param("json", id="json-array")])
def test_other_file_types(write_recipe: RecipeFactory, workspace: Path, tokenizer: Any,
                          suffix: str) -> None:
    import datasets

    rows = [{"instruction": f"Question {i}", "input": "", "output": f"bravo: {i}"}
            for i in range(30)]
    path = workspace / "data" / f"faq.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(rows))
    elif suffix == "csv":
        datasets.Dataset.from_list(rows).to_csv(str(path), index=False)
    else:
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    write_recipe("typed", base="faq-bot",
                 **{"spec.data.sources": [{"path": f"../data/faq.{suffix}"}]})
    prepared = _prepare(workspace, "typed", tokenizer)
    assert prepared.report.rows_read == 30
    assert sum(len(s) for s in prepared.splits.values()) == 30


# --- errors ----------------------------------------------------------------------------


def test_row_missing_a_field_names_file_row_and_field(
        write_recipe: RecipeFactory, write_rows: RowsWriter, workspace: Path,
        tokenizer: Any) -> None:
    rows: list[dict[str, Any]] = [{"instruction": f"q{i}", "output": f"bravo {i}"}
                                  for i in range(5)]
    rows[2] = {"instruction": "q2"}
    rows[4] = {"output": "bravo"}
    write_rows("holes.jsonl", rows)
    write_recipe("holes", base="faq-bot",
                 **{"spec.data.sources": [{"path": "../data/holes.jsonl"}]})
    with pytest.raises(DataError, match=r"holes\.jsonl row 3: missing field 'output'") as info:
        _prepare(workspace, "holes", tokenizer)
    assert "holes.jsonl row 5: missing field 'instruction'" in str(info.value)
    assert "2 bad row(s)" in str(info.value)
    assert info.value.hint is not None and "data.fields" in info.value.hint


def test_bad_message_role_is_named(write_recipe: RecipeFactory, write_rows: RowsWriter,
                                   workspace: Path, tokenizer: Any) -> None:
    write_rows("roles.jsonl", [{"messages": [{"role": "human", "content": "x"},
                                             {"role": "assistant", "content": "y"}]}])
    write_recipe("roles", **{"spec.data.sources.0.path": "../data/roles.jsonl"})
    with pytest.raises(DataError, match=r"row 1: messages\[0\]\.role must be one of "
                                        r"assistant, system, user \(got 'human'\)"):
        _prepare(workspace, "roles", tokenizer)


def test_missing_data_file(workspace: Path, tokenizer: Any) -> None:
    loaded = _load(workspace, "support-bot")
    (workspace / "data" / "support.jsonl").unlink()
    with pytest.raises(DataError, match=r"data file not found: .*support\.jsonl"):
        prepare_data(loaded, tokenizer)


def test_unreadable_file_names_the_line(workspace: Path, tokenizer: Any) -> None:
    data = workspace / "data" / "support.jsonl"
    lines = data.read_text().splitlines()
    lines[2] = lines[2][:-5]
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"cannot read .*support\.jsonl: line 3: invalid JSON"):
        _prepare(workspace, "support-bot", tokenizer)


def test_empty_after_cleaning(write_recipe: RecipeFactory, workspace: Path,
                              tokenizer: Any) -> None:
    write_recipe("picky", **{"spec.data.clean.min_output_chars": 500})
    with pytest.raises(DataError, match=r"no examples left .* after cleaning "
                                        r"\(removed short_output: 307\)") as info:
        _prepare(workspace, "picky", tokenizer)
    assert info.value.hint == "lower data.clean.min_output_chars"


def test_max_tokens_below_every_row(write_recipe: RecipeFactory, workspace: Path,
                                    tokenizer: Any) -> None:
    write_recipe("tight", **{"spec.data.clean.max_tokens": 5})
    with pytest.raises(DataError, match=r"removed too_long: 303") as info:
        _prepare(workspace, "tight", tokenizer)
    assert info.value.hint is not None
    assert "raise data.clean.max_tokens (now 5)" in info.value.hint


def test_max_seq_length_smaller_than_prompt(write_recipe: RecipeFactory, workspace: Path,
                                            tokenizer: Any) -> None:
    write_recipe("cramped", **{"spec.training.max_seq_length": 12,
                               "spec.data.clean.max_tokens": None})
    with pytest.raises(DataError, match=r"prompt of training\.max_seq_length \(12\) tokens or "
                                        r"more.*\n.*support\.jsonl row \d+: prompt is \d+ tokens"
                       ) as info:
        _prepare(workspace, "cramped", tokenizer)
    assert info.value.hint is not None and "raise training.max_seq_length" in info.value.hint


# --- output folder ---------------------------------------------------------------------


def test_out_dir_holds_splits_and_report(workspace: Path, tokenizer: Any, tmp_path: Path
                                         ) -> None:
    out = tmp_path / "outs" / "prepared"
    prepared = _prepare(workspace, "support-bot", tokenizer, out)
    assert prepared.out_dir == out
    assert sorted(p.name for p in out.iterdir()) == [
        "data_report.json", "test.jsonl", "train.jsonl", "validation.jsonl"]
    for name, ds in prepared.splits.items():
        rows = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        assert rows == ds.to_list()
    assert json.loads((out / "data_report.json").read_text()) == prepared.report.to_json()
    assert [p.name for p in out.parent.iterdir()] == ["prepared"]  # no temp folder left


def test_out_dir_is_replaced_whole(workspace: Path, tokenizer: Any, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "stale.jsonl").write_text("old\n")
    _prepare(workspace, "faq-bot", tokenizer, out)
    assert not (out / "stale.jsonl").exists()


def test_nothing_written_on_error(write_recipe: RecipeFactory, workspace: Path,
                                  tokenizer: Any, tmp_path: Path) -> None:
    out = tmp_path / "outs" / "prepared"
    write_recipe("picky", **{"spec.data.clean.min_output_chars": 500})
    with pytest.raises(DataError):
        _prepare(workspace, "picky", tokenizer, out)
    assert not out.parent.exists()


# --- evaluation texts and the tokenizer ------------------------------------------------


def test_load_eval_texts(workspace: Path, tokenizer: Any) -> None:
    texts = load_eval_texts(_load(workspace, "support-bot"), tokenizer)
    assert len(texts) == 32 and all(isinstance(t, str) and t for t in texts)
    first = json.loads((workspace / "data" / "general.jsonl").read_text().splitlines()[0])
    assert texts[0] == first["text"]
    assert load_eval_texts(_load(workspace, "faq-bot"), tokenizer) == []


def test_load_eval_texts_renders_chats(write_recipe: RecipeFactory, workspace: Path,
                                       tokenizer: Any) -> None:
    write_recipe("chat-eval", **{"spec.evaluation.general": {
        "path": "../data/faq.jsonl", "format": "alpaca", "max_examples": 3}})
    texts = load_eval_texts(_load(workspace, "chat-eval"), tokenizer)
    assert len(texts) == 3
    assert texts[0].startswith("<|user|>\n") and texts[0].endswith("<|end|>\n")
    assert "<|assistant|>\nbravo: " in texts[0]


def test_load_base_tokenizer(workspace: Path) -> None:
    tok = load_base_tokenizer(_load(workspace, "support-bot"))
    assert tok.eos_token == "<|end|>" and len(tok) == 1024


@pytest.mark.parametrize(("packing", "truncated"), [
    pytest.param(None, False, id="cpt-packs-by-default"),
    pytest.param(False, True, id="packing-off-truncates"),
])
def test_cpt_text_is_truncated_only_without_packing(
        write_recipe: RecipeFactory, write_rows: RowsWriter, workspace: Path, tokenizer: Any,
        delete: object, packing: bool | None, truncated: bool) -> None:
    from recipes.scaffold.tiny_model import sample_sentences

    write_rows("long.jsonl", [{"text": " ".join(sample_sentences(d, 30))} for d in range(10)])
    changes: dict[str, Any] = {
        "spec.training.objective": "cpt", "spec.data.format": "text",
        "spec.data.sources.0.path": "../data/long.jsonl", "spec.data.system_prompt": delete,
        "spec.data.split.validation": 0.0, "spec.data.split.test": 0.0,
        "spec.data.clean.max_tokens": None, "spec.training.max_seq_length": 64}
    if packing is not None:
        changes["spec.training.packing"] = packing
    write_recipe("long", **changes)
    lengths = [len(ids) for ids in _prepare(workspace, "long", tokenizer).splits["train"]
               ["input_ids"]]
    assert (max(lengths) == 64) is truncated
    assert min(lengths) > 64 or truncated


@pytest.mark.parametrize("content", [pytest.param("", id="empty"),
                                     pytest.param("\n  \n", id="blank-lines")])
def test_empty_data_file(write_recipe: RecipeFactory, workspace: Path, tokenizer: Any,
                         content: str) -> None:
    (workspace / "data" / "void.jsonl").write_text(content)
    write_recipe("void", **{"spec.data.sources.0.path": "../data/void.jsonl"})
    with pytest.raises(DataError, match=r"no examples left in .*void\.jsonl after cleaning "
                                        r"\(the files have no rows\)"):
        _prepare(workspace, "void", tokenizer)
