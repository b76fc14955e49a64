"""The pure part of generation: tasks, their requests, parsed answers, and what is kept.

A :class:`Task` is one row to generate, with a stable key (what it derives from and its
index), so a rerun knows what is already done (:func:`pending`). Each task is one request
(a paraphrase, or a synthesized passage) or two (a synthesized chat: the request, then the
answer to it). :func:`select` puts every generated row through the recipe's own cleaning
(:mod:`recipes.data.clean`) and drops duplicates of the originals and of each other by the
same content id the pipeline dedupes on; :class:`GenReport` counts each drop by reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from recipes.core.errors import DataError
from recipes.data.clean import CleanReport, clean_text, content_id, drop_reason
from recipes.data.generate.templates import SYSTEM, Template
from recipes.data.load import Example, Kind, Message, kind_of
from recipes.schema import CleanSpec, DataFormat, FieldMap

Mode = Literal["augment", "synthesize"]
SAMPLES_PER_REASON = 3

# Drop reasons, in the order the report lists them.
UNPARSEABLE = "empty_or_unparseable"
DUP_ORIGINAL = "duplicate_of_original"
DUP_GENERATED = "duplicate_of_generated"


@dataclass(frozen=True)
class Task:
    """One row to generate: from ``origin`` (augment) or ``topic`` (synthesize), ``index``-th."""

    key: str
    index: int
    origin: Example | None = None
    topic: str | None = None


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:32]


def last_user(messages: Sequence[Message]) -> int | None:
    """Index of the last user message (the one a paraphrase replaces), or None."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            return i
    return None


def augment_tasks(examples: Iterable[Example], n: int) -> list[Task]:
    """``n`` paraphrase tasks per example with text to rewrite; identical rows plan once."""
    tasks: list[Task] = []
    seen: set[str] = set()
    for ex in examples:
        if ex.kind != "text" and last_user(ex.messages) is None:
            continue
        cid = content_id(ex)
        if cid in seen:
            continue
        seen.add(cid)
        tasks.extend(Task(_key("augment", cid, i), i, origin=ex) for i in range(n))
    return tasks


def synthesize_tasks(topics: Sequence[str], count: int) -> list[Task]:
    """``count`` tasks over the topics, round robin (topic 1, 2, ..., 1, 2, ...)."""
    if not topics:
        raise DataError("no topics to synthesize from",
                        hint="pass --topics 'billing,refunds' or --topics-file FILE")
    return [Task(_key("synthesize", topics[i % len(topics)], i // len(topics)),
                 i // len(topics), topic=topics[i % len(topics)]) for i in range(count)]


def read_topics(text: str, shown: str) -> list[str]:
    """One topic a line; blank lines and ``#`` comments skipped; a repeat names both lines."""
    topics: list[str] = []
    first: dict[str, int] = {}
    problems: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        topic = line.split("#", 1)[0].strip()
        if not topic:
            continue
        if topic in first:
            problems.append(f"{shown} line {n}: topic {topic!r} repeats line {first[topic]}")
            continue
        first[topic] = n
        topics.append(topic)
    if problems:
        raise DataError("repeated topics:\n" + "\n".join(problems),
                        hint="keep each topic once (--count spreads rows over them)")
    if not topics:
        raise DataError(f"no topics in {shown}",
                        hint="write one topic a line (# starts a comment)")
    return topics


def pending(tasks: Sequence[Task], done: Iterable[str]) -> list[Task]:
    """The tasks whose key has no answer yet, in plan order."""
    have = set(done)
    return [t for t in tasks if t.key not in have]


def request_seed(seed: int, key: str, step: int) -> int:
    """A per-request seed from the run's seed and the task: reruns ask the same question."""
    digest = hashlib.sha256(f"{seed}:{key}:{step}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def source_text(ex: Example) -> str:
    """What a paraphrase rewrites: the last user message, or the whole text."""
    if ex.kind == "text":
        return ex.text
    i = last_user(ex.messages)
    assert i is not None, "augment_tasks plans only rows with a user message"
    return ex.messages[i]["content"]


def first_request(task: Task, template: Template) -> list[Message]:
    value = source_text(task.origin) if task.origin is not None else str(task.topic)
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": template.render(value)}]


def answer_request(question: str, system_prompt: str) -> list[Message]:
    """The second request of a synthesized chat: the generated request, answered."""
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*head, {"role": "user", "content": question}]


def steps(mode: Mode, kind: Kind) -> int:
    """Requests per task: a synthesized chat asks twice (its request, then the answer)."""
    return 2 if mode == "synthesize" and kind == "chat" else 1


_LABEL = re.compile(
    r"^\s*(?:here is|here's)?\s*(?:the\s+)?(?:rewritten|paraphrased|new)?\s*"
    r"(?:request|question|passage|paraphrase|answer|rewrite)\s*:\s*", re.IGNORECASE)
_QUOTES = (('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("`", "`"))


def parse_answer(raw: str | None) -> str | None:
    """The text of an answer without a leading label or wrapping quotes; None when empty."""
    if raw is None:
        return None
    text = _LABEL.sub("", raw.strip(), count=1).strip()
    for a, b in _QUOTES:
        if len(text) >= 2 and text.startswith(a) and text.endswith(b):
            text = text[1:-1].strip()
    return text or None


def build_example(task: Task, texts: Sequence[str | None], *, kind: Kind, system_prompt: str,
                  shown: str, row: int) -> Example | None:
    """The row a task's answers make, or None when an answer is empty or unparseable."""
    parsed = [parse_answer(t) for t in texts]
    if not parsed or any(p is None for p in parsed):
        return None
    first = str(parsed[0])
    if task.origin is not None:
        ex = replace(task.origin, source="generated", file=shown, row=row)
        if kind == "text":
            return replace(ex, text=first)
        i = last_user(ex.messages)
        assert i is not None
        messages = [dict(m) for m in ex.messages]
        messages[i]["content"] = first
        return replace(ex, messages=messages)
    if kind == "text":
        return Example(kind="text", source="generated", file=shown, row=row, text=first)
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return Example(kind="chat", source="generated", file=shown, row=row, messages=[
        *head, {"role": "user", "content": first},
        {"role": "assistant", "content": str(parsed[1])}])


@dataclass
class GenReport:
    """What generation kept and why the rest was dropped, with a few rows named per reason."""

    planned: int = 0
    generated: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    cleaning: dict[str, Any] = field(default_factory=dict)

    def drop(self, where: str, reason: str) -> None:
        self.dropped[reason] += 1
        seen = self.samples.setdefault(reason, [])
        if len(seen) < SAMPLES_PER_REASON:
            seen.append(where)

    def to_json(self) -> dict[str, Any]:
        return {"planned": self.planned, "generated": self.generated, "kept": self.kept,
                "dropped": dict(sorted(self.dropped.items())),
                "dropped_total": sum(self.dropped.values()), "samples": self.samples,
                "cleaning": self.cleaning}


def select(originals: Iterable[Example], generated: Sequence[tuple[Task, Example | None]],
           spec: CleanSpec) -> tuple[list[Example], GenReport]:
    """Clean the generated rows as the pipeline would, then drop duplicates of the originals
    and of each other (when ``spec.dedupe``), keeping the first of each."""
    report = GenReport(generated=len(generated))
    original_ids = {content_id(clean_text(ex, spec, CleanReport())) for ex in originals}
    cleaning = CleanReport()
    seen: set[str] = set()
    kept: list[Example] = []
    for task, ex in generated:
        if ex is None:
            report.drop(f"task {task.key}", UNPARSEABLE)
            continue
        cleaning.rows_in += 1
        ex = clean_text(ex, spec, cleaning)
        reason = drop_reason(ex, spec)
        if reason is not None:
            report.drop(ex.where, f"cleaning_{reason}")
            continue
        if spec.dedupe:
            cid = content_id(ex)
            if cid in original_ids:
                report.drop(ex.where, DUP_ORIGINAL)
                continue
            if cid in seen:
                report.drop(ex.where, DUP_GENERATED)
                continue
            seen.add(cid)
        kept.append(ex)
    report.kept = len(kept)
    report.cleaning = {"modified": dict(sorted(cleaning.modified.items())),
                       "pii_redacted": dict(sorted(cleaning.pii.items()))}
    return kept, report


# --- rows in the recipe's data format -----------------------------------------------------

_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}


def _without_system(messages: list[Message], system_prompt: str) -> list[Message]:
    """The loader adds data.system_prompt to every chat; the file need not repeat it."""
    if system_prompt and messages and messages[0] == {"role": "system",
                                                       "content": system_prompt}:
        return messages[1:]
    return messages


def to_format_row(ex: Example, fmt: DataFormat, fields: FieldMap, system_prompt: str
                  ) -> dict[str, Any]:
    """``ex`` as a row of ``fmt`` under the recipe's field names (what its loader reads)."""
    if kind_of(fmt) != ex.kind:
        raise DataError(f"cannot write {ex.kind} rows as data.format {fmt.value}",
                        hint="generate from sources of the recipe's own kind of rows")
    if fmt is DataFormat.text:
        return {fields.text: ex.text}
    msgs = _without_system(ex.messages, system_prompt)
    if fmt is DataFormat.openai_chat:
        return {fields.messages: msgs}
    if fmt is DataFormat.sharegpt:
        return {fields.conversations: [{"from": _SHAREGPT_FROM[m["role"]],
                                        "value": m["content"]} for m in msgs]}
    system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
    body = msgs[1:] if system else msgs
    extra = {fields.system: system} if system else {}
    if fmt is DataFormat.dpo_pairs:
        prompt: Any = body[0]["content"] if len(body) == 1 else body
        return {fields.prompt: prompt, fields.chosen: ex.chosen, fields.rejected: ex.rejected,
                **extra}
    if [m["role"] for m in body] != ["user", "assistant"]:
        raise DataError(f"{ex.where}: a conversation of {len(body)} turns cannot be written "
                        "in alpaca format (one instruction, one output)",
                        hint="set data.format to openai_chat or sharegpt for multi-turn rows")
    return {fields.instruction: body[0]["content"], fields.input: "",
            fields.output: body[1]["content"], **extra}


def fingerprint(settings: dict[str, Any]) -> str:
    """The identity of a run's settings: a partial file resumes only under the same one."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
