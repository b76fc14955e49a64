"""The pure parts of `reg data augment|synthesize`: templates, tasks, parsing, selection,
rows in every data format (read back by the real loader), and the partial file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from recipes.core.errors import DataError
from recipes.data.clean import content_id
from recipes.data.generate.journal import Journal, Record, partial_path
from recipes.data.generate.plan import (
    DUP_GENERATED,
    DUP_ORIGINAL,
    UNPARSEABLE,
    Task,
    augment_tasks,
    build_example,
    parse_answer,
    pending,
    read_topics,
    request_seed,
    select,
    synthesize_tasks,
    to_format_row,
)
from recipes.data.generate.templates import builtin, parse_template
from recipes.data.load import Example, map_row
from recipes.schema import CleanSpec, DataFormat, FieldMap

ChatFactory = Callable[..., Example]


@pytest.fixture
def chat() -> ChatFactory:
    def make(user: str = "How do I reset my password?", answer: str = "alpha: reset password",
             row: int = 1, system: str = "") -> Example:
        head = [{"role": "system", "content": system}] if system else []
        return Example(kind="chat", source="support", file="data/support.jsonl", row=row,
                       messages=[*head, {"role": "user", "content": user},
                                 {"role": "assistant", "content": answer}])
    return make


# --- templates --------------------------------------------------------------------------

def test_template_renders_its_placeholder() -> None:
    t = parse_template("Say it again:\n{text}\n{{literal}}", "t.txt", "text")
    assert t.render("hello") == "Say it again:\nhello\n{literal}"
    assert t.sha256 != builtin("paraphrase", "text").sha256


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("line one\nabout {subject}", r"t.txt line 2: unknown placeholder \{subject\}",
                 id="unknown"),
    pytest.param("no placeholder here", r"t.txt: no \{topic\} placeholder", id="missing"),
    pytest.param("{topic}\n{ oops", r"t.txt line 2: .*'\}'", id="lone-brace"),
])
def test_bad_templates_name_the_line(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        parse_template(text, "t.txt", "topic")
    assert "{{ and }}" in str(info.value.hint)


# --- tasks ------------------------------------------------------------------------------

def test_augment_plans_n_per_distinct_row_with_stable_keys(chat: ChatFactory) -> None:
    rows = [chat(), chat(row=2), chat("Where is my invoice?", "alpha: invoice", row=3)]
    tasks = augment_tasks(rows, 3)
    assert len(tasks) == 6  # rows 1 and 2 say the same: planned once
    assert [t.index for t in tasks] == [0, 1, 2, 0, 1, 2]
    assert [t.key for t in augment_tasks(rows, 3)] == [t.key for t in tasks]
    assert len({t.key for t in tasks}) == 6
    assert pending(tasks, [tasks[0].key, tasks[4].key]) == [tasks[i] for i in (1, 2, 3, 5)]


def test_synthesize_spreads_count_over_topics() -> None:
    tasks = synthesize_tasks(["refunds", "passwords"], 5)
    assert [(t.topic, t.index) for t in tasks] == [
        ("refunds", 0), ("passwords", 0), ("refunds", 1), ("passwords", 1), ("refunds", 2)]
    assert len({t.key for t in tasks}) == 5
    with pytest.raises(DataError, match="no topics"):
        synthesize_tasks([], 3)


def test_request_seeds_are_stable_and_distinct() -> None:
    assert request_seed(0, "k", 0) == request_seed(0, "k", 0)
    assert len({request_seed(0, "k", 0), request_seed(0, "k", 1), request_seed(1, "k", 0),
                request_seed(0, "j", 0)}) == 4
    assert 0 <= request_seed(7, "k", 0) < 2**31


def test_topics_skip_comments_and_name_repeats() -> None:
    assert read_topics("refunds\n\n# billing\ninvoices  # paper ones\n", "t") == [
        "refunds", "invoices"]
    with pytest.raises(DataError, match=r"topics.txt line 3: topic 'refunds' repeats line 1"):
        read_topics("refunds\ninvoices\nrefunds\n", "topics.txt")
    with pytest.raises(DataError, match=r"no topics in topics\.txt"):
        read_topics("# nothing\n", "topics.txt")


# --- answers ----------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "parsed"), [
    pytest.param("  How can I change my password? ", "How can I change my password?",
                 id="trimmed"),
    pytest.param('Rewritten request: "Where is my bill?"', "Where is my bill?", id="label"),
    pytest.param("Here is the paraphrase: reset it", "reset it", id="here-is"),
    pytest.param("Note: keep this", "Note: keep this", id="other-colon-kept"),
    pytest.param('""', None, id="empty-quotes"),
    pytest.param("   ", None, id="blank"),
    pytest.param(None, None, id="none"),
])
def test_parse_answer(raw: str | None, parsed: str | None) -> None:
    assert parse_answer(raw) == parsed


def test_paraphrase_replaces_the_last_user_message_and_keeps_the_answer(
        chat: ChatFactory) -> None:
    origin = chat(system="Be brief.")
    task = augment_tasks([origin], 1)[0]
    ex = build_example(task, ["Question: How can I change my password?"], kind="chat",
                       system_prompt="", shown="out.jsonl", row=4)
    assert ex is not None and ex.where == "out.jsonl row 4"
    assert ex.messages == [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "How can I change my password?"},
                           {"role": "assistant", "content": "alpha: reset password"}]
    assert origin.messages[1]["content"] == "How do I reset my password?"  # not mutated
    assert build_example(task, [""], kind="chat", system_prompt="", shown="o", row=1) is None


def test_synthesized_chat_is_request_then_answer() -> None:
    task = synthesize_tasks(["refunds"], 1)[0]
    ex = build_example(task, ["How do I get a refund?", "alpha: refund"], kind="chat",
                       system_prompt="You help.", shown="o.jsonl", row=1)
    assert ex is not None and [m["role"] for m in ex.messages] == [
        "system", "user", "assistant"]
    assert build_example(task, ["How?", None], kind="chat", system_prompt="", shown="o",
                         row=1) is None


# --- selection --------------------------------------------------------------------------

def test_select_cleans_then_drops_duplicates_by_reason(chat: ChatFactory) -> None:
    original = chat()
    tasks = [Task(f"k{i}", i) for i in range(6)]
    generated: list[tuple[Task, Example | None]] = [
        (tasks[0], chat("How do I reset   my password?  ", row=1)),  # = original, normalised
        (tasks[1], chat("Can I change my password?", row=2)),
        (tasks[2], chat("Can I change my password?", row=3)),  # = the row above
        (tasks[3], None),  # empty or unparseable answer
        (tasks[4], chat("Mail me at jo@example.com", row=5)),  # kept, redacted
        (tasks[5], chat("", row=6)),  # an empty prompt fails cleaning
    ]
    kept, report = select([original], generated, CleanSpec())
    assert [ex.row for ex in kept] == [2, 5]
    assert kept[1].messages[0]["content"] == "Mail me at [EMAIL]"
    assert report.generated == 6 and report.kept == 2
    assert dict(report.dropped) == {DUP_ORIGINAL: 1, DUP_GENERATED: 1, UNPARSEABLE: 1,
                                    "cleaning_empty_prompt": 1}
    assert report.samples[DUP_GENERATED] == ["data/support.jsonl row 3"]
    assert report.cleaning["pii_redacted"] == {"email": 1}


def test_select_keeps_duplicates_when_the_recipe_does(chat: ChatFactory) -> None:
    tasks = [Task("a", 0), Task("b", 1)]
    kept, report = select([chat()], [(tasks[0], chat()), (tasks[1], chat())],
                          CleanSpec(dedupe=False))
    assert len(kept) == 2 and not report.dropped


# --- rows in the recipe's format, read back by the loader ---------------------------------

@pytest.mark.parametrize("fmt", [pytest.param(f, id=f.value) for f in (
    DataFormat.openai_chat, DataFormat.sharegpt, DataFormat.alpaca)])
def test_chat_rows_read_back_as_written(fmt: DataFormat, chat: ChatFactory) -> None:
    fields = FieldMap(messages="turns", instruction="q", output="a")
    ex = chat(system="Be brief.")
    row = json.loads(json.dumps(to_format_row(ex, fmt, fields, "")))
    assert map_row(row, fmt, fields, "") == {"messages": ex.messages}
    # the recipe's own system prompt is the loader's to add, not the file's
    plain = to_format_row(ex, fmt, fields, "Be brief.")
    assert "Be brief." not in json.dumps(plain)
    assert map_row(plain, fmt, fields, "Be brief.") == {"messages": ex.messages}


def test_preference_and_text_rows_read_back() -> None:
    pair = Example(kind="preference", source="s", file="f", row=1,
                   messages=[{"role": "user", "content": "Close it"}],
                   chosen="Please close it.", rejected="Close it now!")
    row = to_format_row(pair, DataFormat.dpo_pairs, FieldMap(), "")
    assert map_row(row, DataFormat.dpo_pairs, FieldMap(), "") == {
        "messages": pair.messages, "chosen": pair.chosen, "rejected": pair.rejected}
    text = Example(kind="text", source="s", file="f", row=1, text="A passage.")
    assert to_format_row(text, DataFormat.text, FieldMap(text="body"), "") == {
        "body": "A passage."}


def test_a_multi_turn_chat_is_no_alpaca_row(chat: ChatFactory) -> None:
    ex = chat()
    ex.messages += [{"role": "user", "content": "And then?"},
                    {"role": "assistant", "content": "alpha: then"}]
    with pytest.raises(DataError, match="cannot be written in alpaca format"):
        to_format_row(ex, DataFormat.alpaca, FieldMap(), "")
    with pytest.raises(DataError, match=r"cannot write chat rows as data\.format text"):
        to_format_row(ex, DataFormat.text, FieldMap(), "")
    assert content_id(ex)  # unchanged by the attempts


# --- the partial file ---------------------------------------------------------------------

SETTINGS = {"model": "support-bot:production", "seed": 0}


def test_journal_resumes_and_ignores_a_torn_line(tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    j = Journal.open(out, "fp1", SETTINGS)
    j.append([Record("a", ["one"], ["support-bot v1 (production)"]),
              Record("b", [None], ["support-bot v1 (production)"])], SETTINGS)
    with partial_path(out).open("a") as f:
        f.write('{"key": "c", "texts": ["to')  # a crash in the middle of a batch
    again = Journal.open(out, "fp1", SETTINGS)
    assert sorted(again.records) == ["a", "b"] and again.records["b"].texts == [None]
    again.append([Record("c", ["three"], ["x"])], SETTINGS)
    assert sorted(Journal.open(out, "fp1", SETTINGS).records) == ["a", "b", "c"]
    assert not out.exists()


def test_journal_of_other_settings_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    Journal.open(out, "fp1", SETTINGS).append([Record("a", ["one"], ["x"])], SETTINGS)
    before = partial_path(out).read_bytes()
    with pytest.raises(DataError, match="other settings") as info:
        Journal.open(out, "fp2", {**SETTINGS, "seed": 1})
    assert "delete" in str(info.value.hint)
    assert partial_path(out).read_bytes() == before


def test_journal_with_a_torn_header_starts_over(tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    partial_path(out).write_text('{"reg_generate": 1, "finger')
    assert Journal.open(out, "fp1", SETTINGS).records == {}
    assert not partial_path(out).exists()
