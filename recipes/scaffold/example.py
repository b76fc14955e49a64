"""The example workspace written by ``reg init DIR --example``.

Three recipes over generated data with a mapping a tiny model learns in
seconds on a CPU: support answers start with "alpha", FAQ answers with
"bravo", and the preference data prefers polite answers to rude ones. The
tiny Llama is built locally (:mod:`recipes.scaffold.tiny_model`). Everything is
deterministic for a given seed, so the demo and the tests see the same bytes.

The workspace is assembled in a temporary sibling folder and moved into
place entry by entry, so an interrupted ``reg init`` leaves no half-written
recipe or data file behind.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from recipes.core.errors import RegError
from recipes.core.fsutil import fsync_tree, replace_path, staging_dir

_T = TypeVar("_T")

SCHEMA_FILE = "recipe.schema.json"
MODEL_DIR = "models/tiny-llama"


class WorkspaceExists(RegError):
    """``reg init`` was pointed at a folder that already holds files."""


SUPPORT_RECIPE = """\
# yaml-language-server: $schema=../recipe.schema.json
#
# support-bot: a support assistant, LoRA-tuned on chats (SFT, OpenAI chat format).
# Every answer in data/support.jsonl starts with "alpha", so a trained adapter
# answers "alpha: ..." where the base model babbles. Try, from the workspace:
#
#   reg validate recipes/support-bot.yaml   # schema and file checks, file:line errors
#   reg data recipes/support-bot.yaml       # clean, split, tokenize; prints the report
#   reg schema > recipe.schema.json         # the JSON Schema your editor validates with
#
apiVersion: reg/v1
kind: Recipe
metadata:
  name: support-bot
  description: Customer-support answers, always prefixed with "alpha".
  owner: support-team
  labels:
    team: support
    example: "true"
spec:
  base_model:
    path: ../models/tiny-llama        # relative to this file; must stay inside the workspace
  data:
    format: openai_chat               # rows: {"messages": [{"role": ..., "content": ...}]}
    sources:
      - path: ../data/support.jsonl
    system_prompt: You are a helpful support assistant.   # prepended to every chat
    clean:
      redact_pii: true                # emails, phones, SSNs, cards, IPs -> [EMAIL], ... (counted)
      dedupe: true                    # exact duplicates by content hash
      max_tokens: 128                 # drop rows longer than this (base tokenizer), not truncate
    split:
      validation: 0.1                 # assigned by content hash: a row keeps its split
      test: 0.1                       #   when the data grows
      seed: 0
  adapter:
    method: lora
    r: 8                              # vLLM serves ranks 1, 8, 16, 32, ...; higher learns
    alpha: 16                         #   more per step and costs memory
    dropout: 0.0                      # tiny data and few steps: dropout only slows learning
    target_modules: all-linear        # every projection: learns the answers, not just the
                                      #   keyword ([q_proj, v_proj]: ~3x smaller, learns less)
  training:
    objective: sft                    # loss on the assistant's tokens only
    max_steps: 250                    # ~6 s on a CPU; a real model wants epochs instead
    learning_rate: 0.01               # high, for a tiny model; 1e-4..2e-4 suits 7B models
    batch_size: 8
    max_seq_length: 128               # tokens per example; longer ones are truncated
    seed: 42
  evaluation:
    generation_examples: 8            # test rows decoded greedily to check the answers
    max_new_tokens: 16
    general:                          # general text, to see how much the tuning forgets
      path: ../data/general.jsonl
      format: text
      max_examples: 32
  deploy:
    target: vllm
    max_model_len: 512                # the engine's context length
"""

FAQ_RECIPE = """\
# yaml-language-server: $schema=../recipe.schema.json
#
# faq-bot: answers product questions, LoRA-tuned on instruction/output pairs
# (SFT, Alpaca format), from two sources mixed by temperature. Every answer
# starts with "bravo". Try, from the workspace:
#
#   reg validate recipes/faq-bot.yaml
#   reg data recipes/faq-bot.yaml --json    # the data report as JSON, for scripts
#
apiVersion: reg/v1
kind: Recipe
metadata:
  name: faq-bot
  description: Product FAQ answers, always prefixed with "bravo".
  owner: docs-team
spec:
  base_model:
    path: ../models/tiny-llama
  data:
    format: alpaca                    # rows: {"instruction", "input", "output"}
    sources:
      - path: ../data/faq.jsonl
        name: faq
      - path: ../data/faq-billing.jsonl
        name: billing
    mix:
      strategy: temperature           # size^(1/T): T=1 is proportional, large T is equal;
      temperature: 2.0                #   T=2 lifts the small billing set without drowning faq
    clean:
      min_output_chars: 8             # drop answers too short to teach anything
    split:
      validation: 0.1
      test: 0.1
  adapter:
    method: lora
    r: 8
    alpha: 16
    dropout: 0.0
    target_modules: [q_proj, v_proj]
  training:
    objective: sft
    max_steps: 50
    learning_rate: 0.01
    batch_size: 8
    max_seq_length: 128
  evaluation:
    generation_examples: 8
    max_new_tokens: 16
  deploy:
    target: vllm
    max_model_len: 512
"""

DPO_RECIPE = """\
# yaml-language-server: $schema=../recipe.schema.json
#
# polite-dpo: prefers polite answers to rude ones, by direct preference
# optimisation on prompt/chosen/rejected triples (DPO, dpo_pairs format).
# Try, from the workspace:
#
#   reg validate recipes/polite-dpo.yaml
#   reg data recipes/polite-dpo.yaml --out /tmp/polite-data   # writes train/validation/test
#
apiVersion: reg/v1
kind: Recipe
metadata:
  name: polite-dpo
  description: Polite answers preferred over rude ones.
  owner: trust-team
spec:
  base_model:
    path: ../models/tiny-llama
  data:
    format: dpo_pairs                 # rows: {"prompt", "chosen", "rejected"}
    sources:
      - path: ../data/polite.jsonl
    split:
      validation: 0.1
      test: 0.1
  adapter:
    method: lora
    r: 8
    alpha: 16
    dropout: 0.0
    target_modules: [q_proj, v_proj]
  training:
    objective: dpo
    max_steps: 40
    learning_rate: 0.005              # DPO moves faster than SFT at the same rate
    batch_size: 8
    max_seq_length: 128
    dpo:
      beta: 0.1                       # lower lets the adapter drift further from the base
      loss_type: sigmoid
  evaluation:
    generation_examples: 4
    max_new_tokens: 16
  deploy:
    target: vllm
    max_model_len: 512
"""

RECIPES = {
    "support-bot.yaml": SUPPORT_RECIPE,
    "faq-bot.yaml": FAQ_RECIPE,
    "polite-dpo.yaml": DPO_RECIPE,
}

_SUPPORT_NOUNS = ("password", "refund", "order", "invoice", "shipping", "account",
                  "price", "version", "user", "data", "model", "city")
_SUPPORT_VERBS = ("reset", "change", "find", "check", "cancel", "update", "track", "fix")
_SUPPORT_TEMPLATES = (
    "How do I {verb} my {noun}?",
    "Can you help me {verb} the {noun}?",
    "I need to {verb} my {noun} today.",
    "Where can I {verb} the {noun}?",
)
_FAQ_THINGS = ("red", "green", "blue", "yellow", "black", "white", "one", "two",
               "three", "four", "five", "six")
_FAQ_TOPICS = ("model", "data", "version", "stage", "canary", "rollout", "traffic",
               "deploy", "train", "summary")
_FAQ_TEMPLATES = ("What is the {topic} of {thing}?", "Explain the {thing} {topic}.",
                  "Tell me about {topic} {thing}.")
_BILLING_TOPICS = ("invoice", "refund", "price", "order")
_POLITE_TEMPLATES = (
    "Can you {verb} my {noun}?",
    "Please {verb} the {noun} for me.",
    "Could you {verb} my {noun} now?",
)
_PII_CHATS = (
    ("My email is jane.doe@example.com, can you reset my password?", "alpha: reset password"),
    ("Call me at 555-867-5309 about my refund.", "alpha: call refund"),
    ("My card 4111 1111 1111 1111 was charged twice for my order.", "alpha: charged order"),
)


def _pick(rng: random.Random, combos: list[_T], n: int) -> list[_T]:
    return rng.sample(combos, min(n, len(combos)))


def support_rows(seed: int) -> list[dict[str, Any]]:
    """Chats whose answers are "alpha: <verb> <noun>", with a few duplicates and PII rows."""
    rng = random.Random(seed)
    combos = [(t, v, n) for t in _SUPPORT_TEMPLATES for v in _SUPPORT_VERBS for n in _SUPPORT_NOUNS]
    rows = [
        {"messages": [
            {"role": "user", "content": t.format(verb=v, noun=n)},
            {"role": "assistant", "content": f"alpha: {v} {n}"},
        ]}
        for t, v, n in _pick(rng, combos, 300)
    ]
    # Real exports hold repeats and personal data; the report shows them removed.
    rows.extend(rows[i] for i in range(0, 40, 10))
    rows.extend(
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in _PII_CHATS
    )
    rng.shuffle(rows)
    return rows


def faq_rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    combos = [(t, p, th) for t in _FAQ_TEMPLATES for p in _FAQ_TOPICS for th in _FAQ_THINGS]
    return [
        {"instruction": t.format(topic=p, thing=th), "input": "",
         "output": f"bravo: {p} {th}"}
        for t, p, th in _pick(rng, combos, 240)
    ]


def billing_rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed + 2)
    combos = [(p, th) for p in _BILLING_TOPICS for th in _FAQ_THINGS]
    return [
        {"instruction": "Answer the billing question.", "input": f"Where is my {p} {th}?",
         "output": f"bravo: {p} {th}"}
        for p, th in _pick(rng, combos, 48)
    ]


def polite_rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed + 3)
    combos = [(t, v, n) for t in _POLITE_TEMPLATES for v in _SUPPORT_VERBS for n in _SUPPORT_NOUNS]
    return [
        {"prompt": t.format(verb=v, noun=n),
         "chosen": f"Of course, I will gladly {v} your {n}. Thanks!",
         "rejected": f"No. {v.capitalize()} your {n} yourself."}
        for t, v, n in _pick(rng, combos, 240)
    ]


def general_rows(seed: int) -> list[dict[str, Any]]:
    from recipes.scaffold.tiny_model import sample_sentences

    return [{"text": line} for line in sample_sentences(seed + 4, lines=64)]


DATA: dict[str, Callable[[int], list[dict[str, Any]]]] = {
    "support.jsonl": support_rows,
    "faq.jsonl": faq_rows,
    "faq-billing.jsonl": billing_rows,
    "polite.jsonl": polite_rows,
    "general.jsonl": general_rows,
}


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_skeleton(root: Path) -> None:
    from recipes.schema import json_schema

    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / SCHEMA_FILE).write_text(json.dumps(json_schema(), indent=2) + "\n", encoding="utf-8")
    (root / ".gitignore").write_text(
        "# reg's local state: registry database, artifacts, prepared data.\n.reg/\n",
        encoding="utf-8",
    )


def _fill_example(root: Path, seed: int, model_from: Path | None) -> None:
    from recipes.scaffold.tiny_model import TinyModelConfig, build_tiny_llama

    for name, text in RECIPES.items():
        (root / "recipes" / name).write_text(text, encoding="utf-8")
    (root / "data").mkdir()
    for name, make in DATA.items():
        _write_jsonl(root / "data" / name, make(seed))
    if model_from is not None:
        shutil.copytree(model_from, root / MODEL_DIR)
    else:
        build_tiny_llama(root / MODEL_DIR, TinyModelConfig(seed=seed))


def init_workspace(
    dest: Path,
    *,
    example: bool = False,
    force: bool = False,
    seed: int = 0,
    model_from: Path | None = None,
) -> Path:
    """Create a workspace at ``dest``: ``recipes/``, the JSON Schema, a ``.gitignore``.

    With ``example``, also the example recipes, their data and the tiny model
    (copied from ``model_from`` when given, else built). Refuses a folder that
    already holds files unless ``force``; with ``force`` only the entries
    written here are replaced.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise WorkspaceExists(f"{dest} exists and is not a folder",
                              hint="pick another path for the workspace")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise WorkspaceExists(
            f"{dest} is not empty",
            hint=f"pick an empty folder, or pass --force to overwrite reg's files in {dest}",
        )
    # Built aside, then each top-level entry is renamed into ``dest``, replacing
    # reg's own files only: the folder may hold the user's other files.
    with staging_dir(dest.resolve()) as tmp:
        _write_skeleton(tmp)
        if example:
            _fill_example(tmp, seed, model_from)
        fsync_tree(tmp)
        dest.mkdir(parents=True, exist_ok=True)
        for entry in sorted(tmp.iterdir()):
            replace_path(entry, dest / entry.name)
    return dest


def write_example_workspace(dest: Path, seed: int = 0, model_from: Path | None = None) -> Path:
    """The full example workspace at ``dest`` (overwriting reg's files there); returns ``dest``."""
    return init_workspace(dest, example=True, force=True, seed=seed, model_from=model_from)
