"""`reg data augment|synthesize` against the session's real gateway serving the tiny model
on real vLLM (tests/support/live_fixtures.py): the file, its provenance, the dedup report,
resuming after a partial run, a recipe naming the file, retries under the gateway's own
injected faults, and an endpoint error that writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from recipes.data.clean import content_id
from recipes.data.generate.client import OpenAICompleter, Retry, Sampling
from recipes.data.generate.journal import partial_path
from recipes.data.generate.provenance import Provenance, provenance_path
from recipes.data.generate.run import plan_synthesize, run_plan
from recipes.data.generate.templates import builtin
from recipes.data.load import load_examples
from recipes.identity import spec_hash
from recipes.loading.loader import load_recipe
from recipes.schema import DataFormat, FieldMap
from tests.support.factories import RecipeFactory, RowsWriter
from tests.support.gateway import Server
from tests.support.live_stack import ADMIN_TOKEN, MODEL

pytestmark = pytest.mark.slow

ROWS = 6
SEED = 7


def reg(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REG_API_KEY", "OPENAI_API_KEY")}
    env.update(COLUMNS="200", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "reg_cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def small_recipe(workspace: Path, write_recipe: RecipeFactory, write_rows: RowsWriter) -> Path:
    """support-bot's recipe over its first six rows."""
    lines = (workspace / "data" / "support.jsonl").read_text().splitlines()[:ROWS]
    write_rows("small.jsonl", [json.loads(x) for x in lines])
    return write_recipe("small-bot", **{"spec.data.sources": [{"path": "../data/small.jsonl"}]})


def _flags(stack: Server, *more: str) -> list[str]:
    return ["--endpoint", f"{stack.url}/v1", "--model", f"{MODEL}:production",
            "--max-tokens", "16", "--seed", str(SEED), "--concurrency", "4", *more, "--json"]


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def test_augment_resumes_writes_provenance_and_feeds_the_recipe(
        stack: Server, workspace: Path, small_recipe: Path,
        write_recipe: RecipeFactory) -> None:
    out = workspace / "data" / "small-bot.augmented.jsonl"
    args = ["data", "augment", str(small_recipe), "--n", "2", *_flags(stack)]
    first = reg(*args[:-1], "--limit", "5", cwd=workspace)  # as a person sees it
    assert first.returncode == 0, first.stderr
    print(first.stdout)
    assert "Answered 5 of 12 (5 now)" in " ".join(first.stdout.split())
    assert "ask for the other 7" in first.stdout
    assert not out.exists() and not provenance_path(out).exists()
    assert len(partial_path(out).read_text().splitlines()) == 1 + 5  # header + answers

    second = _json(reg(*args, cwd=workspace))
    assert (second["complete"], second["answered_before"], second["answered_now"]) == (
        True, 5, 7)
    assert not partial_path(out).exists()
    prov = Provenance.read(provenance_path(out))
    assert prov.model_dump(mode="json") == second["provenance"]
    assert (prov.mode, prov.endpoint, prov.model, prov.seed, prov.n) == (
        "augment", f"{stack.url}/v1", f"{MODEL}:production", SEED, 2)
    assert prov.answered_by == {f"{MODEL} v1 (production)": 2 * ROWS}  # both runs
    assert prov.resumed == 5 and prov.requests == 7
    assert prov.template.name == "builtin:paraphrase" and "{text}" in prov.template.text
    assert prov.sampling == {"temperature": 0.7, "max_tokens": 16}
    report = prov.report
    assert report["planned"] == report["generated"] == 2 * ROWS
    assert report["kept"] + report["dropped_total"] == 2 * ROWS
    assert report["kept"] == prov.rows >= 1, report

    # The rows: the recipe's format, answers kept, no duplicate of an original or another.
    text = out.read_text()
    assert hashlib.sha256(text.encode()).hexdigest() == prov.sha256
    generated = load_examples(out, "gen", fmt=DataFormat.openai_chat, fields=FieldMap(),
                              source="gen")
    originals = load_examples(workspace / "data" / "small.jsonl", "small",
                              fmt=DataFormat.openai_chat, fields=FieldMap(), source="small")
    assert len(generated) == prov.rows
    assert {g.messages[-1]["content"] for g in generated} <= {
        o.messages[-1]["content"] for o in originals}
    ids = [content_id(g) for g in generated]
    assert len(set(ids)) == len(ids) and not set(ids) & {content_id(o) for o in originals}
    print(f"augment: {prov.rows} kept of {2 * ROWS}, dropped {report['dropped']}; "
          f"first rows:\n{''.join(text.splitlines(keepends=True)[:3])}")

    # Named by the recipe like any source: loaded, prepared, and its spec hash is a hash of
    # the rows, not of when they were made.
    named = write_recipe("small-bot", **{"spec.data.sources": [
        {"path": "../data/small.jsonl"}, {"path": "../data/small-bot.augmented.jsonl"}]})
    loaded = load_recipe(named)
    assert out in loaded.data_paths() and provenance_path(out) not in loaded.data_paths()
    before = spec_hash(loaded)
    later = prov.model_copy(update={"finished_at": datetime(2030, 1, 1, tzinfo=UTC)})
    later.write(provenance_path(out))
    assert spec_hash(load_recipe(named)) == before
    prepared = _json(reg("data", str(named), "--json", cwd=workspace))
    kept = {s["path"]: s["kept"] for s in prepared["sources"]}
    assert kept[os.path.relpath(out, workspace)] == prov.rows


def test_synthesize_from_a_topics_file(stack: Server, workspace: Path,
                                       small_recipe: Path) -> None:
    (workspace / "topics.txt").write_text("refunds\n# a comment\npasswords\n")
    out = workspace / "data" / "synth.jsonl"
    done = reg("data", "synthesize", str(small_recipe), "--topics-file", "topics.txt",
               "--count", "4", "--out", "data/synth.jsonl", *_flags(stack)[:-1], cwd=workspace)
    assert done.returncode == 0, done.stderr
    print(done.stdout)  # what a person sees (no --json)
    prov = Provenance.read(provenance_path(out))
    assert f"Wrote {prov.rows} row(s) to data/synth.jsonl" in done.stdout
    assert "add `- path: ../data/synth.jsonl` to data.sources" in done.stdout
    assert prov.topics == ["refunds", "passwords"] and prov.count == 4
    assert prov.requests == sum(prov.answered_by.values())
    assert 4 <= prov.requests <= 8  # a request, then its answer when the request parsed
    assert prov.template.answered_with is not None
    rows = load_examples(out, "synth", fmt=DataFormat.openai_chat, fields=FieldMap(),
                         source="synth")
    assert len(rows) == prov.rows == prov.report["kept"]
    assert all([m["role"] for m in r.messages][-2:] == ["user", "assistant"] for r in rows)
    print(out.read_text().splitlines()[0])


def test_retries_through_faults_the_gateway_injects(stack: Server, workspace: Path,
                                                    small_recipe: Path) -> None:
    """Half of production's requests answered 500 by the real gateway: every row still
    comes, and every retry is one more request sent."""
    fault = f"{stack.url}/admin/faults/{MODEL}/v1"
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    loaded = load_recipe(small_recipe)
    sampling = Sampling(temperature=0.7, max_tokens=8)
    completer = OpenAICompleter(f"{stack.url}/v1", f"{MODEL}:production", "", sampling,
                                Retry(attempts=25, initial_s=0.01, max_s=0.05))
    out = workspace / "data" / "faulty.jsonl"
    plan = plan_synthesize(loaded, topics=["refunds", "passwords", "invoices"], count=12,
                           template=builtin("passage", "topic"), endpoint=f"{stack.url}/v1",
                           model=f"{MODEL}:production", sampling=sampling, seed=SEED, out=out)
    put = httpx.put(fault, json={"error_rate": 0.5, "reason": "retry test", "actor": "test"},
                    headers=admin, timeout=30)
    assert put.status_code == 200, put.text
    try:
        outcome = run_plan(plan, completer, concurrency=4,
                           stats=lambda: (completer.requests, completer.retries,
                                          dict(completer.retried_status)))
    finally:
        gone = httpx.delete(fault, params={"actor": "test"}, headers=admin, timeout=30)
        assert gone.status_code == 200, gone.text
    assert outcome.complete and outcome.provenance is not None
    answered = sum(outcome.provenance.answered_by.values())
    assert completer.retries > 0 and completer.retried_status == {"500": completer.retries}
    assert completer.requests == answered + completer.retries
    assert outcome.provenance.retries == completer.retries
    print(f"retries: {completer.retries} of {completer.requests} requests answered 500")


def test_an_unknown_model_fails_and_writes_nothing(stack: Server, workspace: Path,
                                                   small_recipe: Path) -> None:
    before = sorted(p.name for p in (workspace / "data").iterdir())
    done = reg("data", "augment", str(small_recipe), "--endpoint", f"{stack.url}/v1",
               "--model", "no-such-model", "--n", "1", "--max-tokens", "8", cwd=workspace)
    assert done.returncode == 1
    assert "no-such-model" in done.stderr and "Traceback" not in done.stderr
    assert "reg versions" in done.stderr
    assert sorted(p.name for p in (workspace / "data").iterdir()) == before
