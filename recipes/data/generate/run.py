"""A generation run, top to bottom: plan, ask what is missing, then write the file.

1. :func:`plan_augment` / :func:`plan_synthesize` (read the recipe's rows, no network) make
   a :class:`Plan`: the tasks, the settings that identify the run, and the rows to dedupe
   against;
2. :func:`run_plan` asks for the tasks the partial file has no answer for, ``concurrency``
   at a time, appending each batch to the partial file (at most ``limit`` tasks when given:
   the rest is left for a rerun);
3. once every task is answered, the answers become rows, are cleaned and deduplicated
   (:func:`recipes.data.generate.plan.select`), and the data file and its provenance are
   written atomically; the partial file is removed last.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from recipes.core.errors import DataError
from recipes.core.fsutil import atomic_write_text
from recipes.data.clean import CleanReport, clean_examples
from recipes.data.generate.client import Completer, Sampling
from recipes.data.generate.journal import Journal, Record
from recipes.data.generate.plan import (
    GenReport,
    Mode,
    Task,
    answer_request,
    augment_tasks,
    build_example,
    fingerprint,
    first_request,
    parse_answer,
    pending,
    request_seed,
    select,
    steps,
    synthesize_tasks,
    to_format_row,
)
from recipes.data.generate.provenance import Provenance, TemplateInfo, provenance_path
from recipes.data.generate.templates import Template
from recipes.data.load import Example, Kind, kind_of, load_examples
from recipes.data.pipeline import shown_path
from recipes.loading.recipe import LoadedRecipe
from recipes.schema import Objective

OBJECTIVE_KIND: dict[Objective, Kind] = {
    Objective.sft: "chat", Objective.dpo: "preference", Objective.cpt: "text",
    Objective.reward: "preference", Objective.grpo: "chat",
}
ANSWERED_WITH = ("the generated request as the user message, after data.system_prompt as "
                 "the system message when the recipe has one")


class Progress(Protocol):
    def start(self, total: int, completed: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def stop(self) -> None: ...


class NoProgress:
    def start(self, total: int, completed: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class Plan:
    """What a run generates, and what identifies it (``settings``; the API key is not in it)."""

    mode: Mode
    loaded: LoadedRecipe
    kind: Kind
    tasks: list[Task]
    originals: list[Example]
    template: Template
    settings: dict[str, Any]
    out: Path
    shown: str
    topics: list[str] | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.settings)


@dataclass
class Outcome:
    """What a run did: answered this time, what was already there, and the result if done."""

    planned: int
    answered_before: int
    answered_now: int
    remaining: int
    provenance: Provenance | None = None
    partial: Path | None = None
    report: GenReport | None = None
    retried: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.remaining == 0


def _originals(loaded: LoadedRecipe, out: Path) -> list[Example]:
    """The recipe's rows, from every source but the output itself (a recipe that already
    names the generated file must not paraphrase its paraphrases)."""
    data = loaded.recipe.spec.data
    rows: list[Example] = []
    for src in data.sources:
        path = loaded.resolve(src.path)
        if path == out:
            continue
        rows += load_examples(path, shown_path(path), fmt=src.format or data.format,
                              fields=src.fields or data.fields,
                              source=src.name or Path(src.path).stem,
                              system_prompt=data.system_prompt or "")
    return rows


def _kind(loaded: LoadedRecipe) -> Kind:
    spec = loaded.recipe.spec
    kind = OBJECTIVE_KIND.get(spec.training.objective)
    if kind is None or kind_of(spec.data.format) != kind:
        raise DataError(
            f"{loaded.path}: cannot generate rows for training.objective "
            f"{spec.training.objective.value} with data.format {spec.data.format.value}",
            hint="generate for sft (chat formats), dpo (dpo_pairs) or cpt (text) recipes")
    return kind


def _base_settings(mode: Mode, loaded: LoadedRecipe, template: Template, endpoint: str,
                   model: str, sampling: Sampling, seed: int) -> dict[str, Any]:
    return {"mode": mode, "recipe": loaded.name, "endpoint": endpoint, "model": model,
            "template": template.sha256, "temperature": sampling.temperature,
            "max_tokens": sampling.max_tokens, "seed": seed}


def plan_augment(loaded: LoadedRecipe, *, n: int, template: Template, endpoint: str,
                 model: str, sampling: Sampling, seed: int, out: Path) -> Plan:
    """``n`` paraphrases of every cleaned row of the recipe (PII redacted before it is sent)."""
    kind = _kind(loaded)
    originals = _originals(loaded, out)
    cleaned = clean_examples(originals, loaded.recipe.spec.data.clean, CleanReport())
    settings = {**_base_settings("augment", loaded, template, endpoint, model, sampling, seed),
                "n": n}
    return Plan("augment", loaded, kind, augment_tasks(cleaned, n), originals, template,
                settings, out, shown_path(out))


def plan_synthesize(loaded: LoadedRecipe, *, topics: Sequence[str], count: int,
                    template: Template, endpoint: str, model: str, sampling: Sampling,
                    seed: int, out: Path) -> Plan:
    """``count`` new rows over ``topics``; chats ask for a request, then for its answer."""
    kind = _kind(loaded)
    if kind == "preference":
        raise DataError(f"{loaded.path}: synthesize writes chats or text; this recipe trains "
                        "on preference pairs (dpo_pairs)",
                        hint="use `reg data augment` to paraphrase the prompts of its pairs")
    settings = {**_base_settings("synthesize", loaded, template, endpoint, model, sampling,
                                 seed), "topics": list(topics), "count": count}
    return Plan("synthesize", loaded, kind, synthesize_tasks(topics, count),
                _originals(loaded, out), template, settings, out, shown_path(out), list(topics))


def answer(task: Task, plan: Plan, completer: Completer, seed: int) -> Record:
    """Ask for one task (one request, or two for a synthesized chat)."""
    first = completer.complete(first_request(task, plan.template),
                               seed=request_seed(seed, task.key, 0))
    texts, by = [first.text], [first.answered_by]
    if steps(plan.mode, plan.kind) == 2:
        question = parse_answer(first.text)
        if question is None:
            texts.append(None)
        else:
            system = plan.loaded.recipe.spec.data.system_prompt or ""
            second = completer.complete(answer_request(question, system),
                                        seed=request_seed(seed, task.key, 1))
            texts.append(second.text)
            by.append(second.answered_by)
    return Record(task.key, texts, by)


def run_plan(plan: Plan, completer: Completer, *, concurrency: int, limit: int | None = None,
             progress: Progress | None = None,
             now: Callable[[], datetime] = lambda: datetime.now(UTC),
             stats: Callable[[], tuple[int, int, dict[str, int]]] | None = None) -> Outcome:
    """Ask for what the partial file lacks, then (when all is answered) write the results.

    ``stats`` reports the completer's (requests, retries, retried by reason) for the
    provenance.
    """
    started = now()
    journal = Journal.open(plan.out, plan.fingerprint, plan.settings)
    todo = pending(plan.tasks, journal.records)
    before = len(plan.tasks) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    bar = progress or NoProgress()
    bar.start(len(plan.tasks), before)
    seed = int(plan.settings["seed"])
    answered = 0
    batch_size = max(1, concurrency) * 4
    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency),
                                thread_name_prefix="reg-generate") as pool:
            for start in range(0, len(todo), batch_size):
                futures: list[Future[Record]] = [
                    pool.submit(answer, t, plan, completer, seed)
                    for t in todo[start:start + batch_size]]
                try:
                    done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                    for f in futures:
                        if f in done and f.exception() is None:
                            bar.advance(1)
                    failed = [f for f in done if f.exception() is not None]
                    if failed:
                        for f in futures:
                            f.cancel()
                        wait(futures)
                        raise failed[0].exception()  # type: ignore[misc]
                finally:
                    # Whatever was answered is kept, even when the batch failed or was
                    # interrupted: a rerun does not ask it again.
                    ok = [f.result() for f in futures
                          if f.done() and not f.cancelled() and f.exception() is None]
                    journal.append(ok, plan.settings)
                    answered += len(ok)
    finally:
        bar.stop()
    remaining = len(pending(plan.tasks, journal.records))
    requests, retries, retried = stats() if stats is not None else (0, 0, {})
    outcome = Outcome(len(plan.tasks), before, answered, remaining, partial=journal.path,
                      retried=retried)
    if remaining:
        return outcome
    outcome.provenance, outcome.report = _finish(plan, journal, started, now(), requests,
                                                 retries, retried, before)
    outcome.partial = None
    journal.remove()
    return outcome


def _finish(plan: Plan, journal: Journal, started: datetime, finished: datetime,
            requests: int, retries: int, retried: dict[str, int], resumed: int
            ) -> tuple[Provenance, GenReport]:
    spec = plan.loaded.recipe.spec
    data = spec.data
    system = data.system_prompt or ""
    generated: list[tuple[Task, Example | None]] = []
    who: Counter[str] = Counter()
    for row, task in enumerate(plan.tasks, start=1):
        rec = journal.records[task.key]
        who.update(rec.answered_by)
        generated.append((task, build_example(task, rec.texts, kind=plan.kind,
                                              system_prompt=system, shown=plan.shown,
                                              row=row)))
    kept, report = select(plan.originals, generated, data.clean)
    report.planned = len(plan.tasks)
    rows = [to_format_row(ex, data.format, data.fields, system) for ex in kept]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    plan.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan.out, text)
    s = plan.settings
    prov = Provenance(
        mode=plan.mode, recipe=plan.loaded.name, output=plan.shown, format=data.format.value,
        rows=len(rows), sha256=hashlib.sha256(text.encode()).hexdigest(),
        endpoint=s["endpoint"], model=s["model"], answered_by=dict(sorted(who.items())),
        template=TemplateInfo(name=plan.template.name, sha256=plan.template.sha256,
                              text=plan.template.text,
                              answered_with=ANSWERED_WITH if steps(plan.mode, plan.kind) == 2
                              else None),
        sampling={"temperature": s["temperature"], "max_tokens": s["max_tokens"]},
        seed=s["seed"], n=s.get("n"), topics=s.get("topics"), count=s.get("count"),
        requests=requests, retries=retries, retried=retried, resumed=resumed,
        started_at=started, finished_at=finished, report=report.to_json())
    prov.write(provenance_path(plan.out))
    return prov, report
