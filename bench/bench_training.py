"""Training throughput: `reg train` against a plain transformers Trainer loop.

Same tiny Llama, same data (prepared by reg's data pipeline), same LoRA
config and hyper-parameters, same thread count, measured side by side in one
run (alternating, best of ROUNDS, since other processes share the CPU).
Throughput is real (non-padding) tokens per second of the training loop.

    .venv/bin/python bench/bench_training.py

Two workloads:
- uniform: the example support-bot chats (short, similar lengths), no packing;
  goal >= 1.0x the plain Trainer;
- mixed: chats of 5 to 150 words, `packing: true`; goal >= 1.5x.

``--smoke``: one round of one epoch, 48 mixed chats (the same code paths); ``--json OUT``
writes the measures (bench/results.py).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results import BenchReport, add_arguments, measure

ROUNDS = 3
EPOCHS = 2
MIXED_ROWS = 240
WORDS = ["what", "is", "the", "color", "of", "water", "city", "model", "data", "train",
         "deploy", "version", "stage", "canary", "production", "staging", "rollout", "traffic",
         "user", "support", "bot", "help", "order", "refund", "account"]


def _write_mixed(ws: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        n = rng.choice([rng.randint(3, 12), rng.randint(40, 150)])
        question = " ".join(rng.choice(WORDS) for _ in range(n)) + f" {i}?"
        rows.append({"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": f"alpha: {question[:40]}"}]})
    path = ws / "data" / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _recipe(ws: Path, name: str, source: str, packing: bool, max_len: int,
            epochs: int) -> Path:
    text = f"""apiVersion: reg/v1
kind: Recipe
metadata: {{name: {name}}}
spec:
  base_model: {{path: ../models/tiny-llama}}
  data:
    format: openai_chat
    sources: [{{path: ../data/{source}}}]
    clean: {{max_tokens: {max_len}}}
  adapter: {{method: lora, r: 8, alpha: 16, dropout: 0.0, target_modules: [q_proj, v_proj]}}
  training:
    objective: sft
    epochs: {epochs}
    learning_rate: 0.01
    batch_size: 8
    max_seq_length: {max_len}
    packing: {str(packing).lower()}
  evaluation: {{generation_examples: 0}}
"""
    path = ws / "recipes" / f"{name}.yaml"
    path.write_text(text)
    return path


def plain_trainer(loaded: Any, workdir: Path) -> tuple[float, int]:
    """The reference: transformers' Trainer with its standard seq2seq padding collator."""
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback

    from recipes.data.pipeline import prepare_data
    from recipes.training.model import (
        build_peft_config,
        device_settings,
        load_base_model,
        load_tokenizer,
    )

    spec = loaded.recipe.spec
    t = spec.training
    tokenizer = load_tokenizer(spec.base_model, loaded.base_model_path)
    data = prepare_data(loaded, tokenizer)
    train = data.splits["train"].select_columns(["input_ids", "attention_mask", "labels"])
    settings = device_settings(t, spec.base_model, "cpu", num_params=1, bf16_ok=False)
    set_seed(t.seed)
    model = load_base_model(spec.base_model, loaded.base_model_path, settings)
    config = build_peft_config(spec.adapter, loaded.base_model_path)
    if config is None:
        raise SystemExit(f"{loaded.path}: the bench compares LoRA loops; method 'full' has none")
    peft_model = get_peft_model(model, config)
    args = TrainingArguments(
        output_dir=str(workdir), per_device_train_batch_size=t.batch_size,
        num_train_epochs=t.epochs, learning_rate=float(t.learning_rate),
        lr_scheduler_type=t.lr_scheduler, seed=t.seed, report_to="none", disable_tqdm=True,
        save_strategy="no", logging_steps=10, use_cpu=True, log_level="error",
    )
    trainer = Trainer(model=peft_model, args=args, train_dataset=train,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True,
                                                           label_pad_token_id=-100))
    trainer.remove_callback(PrinterCallback)  # reg drops it too; printing is not training
    start = time.perf_counter()
    trainer.train()
    runtime = time.perf_counter() - start
    tokens = sum(len(x) for x in train["input_ids"]) * t.epochs
    return runtime, tokens


def reg_train(loaded: Any, workdir: Path) -> tuple[float, int]:
    from recipes.training.entry import train

    result = train(loaded, workdir, resume=False, progress=False)
    info = result.report.train
    assert info is not None and info.runtime_s is not None and info.tokens is not None
    return info.runtime_s, info.tokens


def main() -> int:
    import torch

    from recipes.loading.loader import load_recipe
    from recipes.scaffold.example import init_workspace
    from recipes.training.model import cpu_threads_for

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args()
    rounds, epochs, mixed_rows = (1, 1, 48) if args.smoke else (ROUNDS, EPOCHS, MIXED_ROWS)
    report = BenchReport(bench="training", smoke=args.smoke)
    root = Path(tempfile.mkdtemp(prefix="reg-bench-train-"))
    try:
        ws = init_workspace(root / "ws", example=True)
        _write_mixed(ws, mixed_rows)
        workloads = {
            "uniform": load_recipe(_recipe(ws, "uniform", "support.jsonl", False, 128, epochs)),
            "mixed+packing": load_recipe(_recipe(ws, "mixed", "mixed.jsonl", True, 256,
                                                 epochs)),
        }
        # Both loops run with the thread count reg picks, so the ratio compares the loops.
        threads = cpu_threads_for(590_464, 2)
        torch.set_num_threads(threads)
        print(f"torch threads: {threads} (both loops); best of {rounds} alternating rounds; "
              f"{epochs} epochs each")
        goals = {"uniform": 1.0, "mixed+packing": 1.5}
        what = {"uniform": "training tokens/s, uniform short chats, no packing",
                "mixed+packing": f"training tokens/s, {mixed_rows} chats of 5-150 words, "
                                 "packing"}
        failed = False
        print(f"{'workload':<15} {'plain tok/s':>12} {'reg tok/s':>10} {'ratio':>7} {'goal':>6}")
        for name, loaded in workloads.items():
            best = {"plain": 0.0, "reg": 0.0}
            for r in range(rounds):
                for kind, fn in (("plain", plain_trainer), ("reg", reg_train)):
                    wd = root / f"{name}-{kind}-{r}"
                    runtime, tokens = fn(loaded, wd)
                    best[kind] = max(best[kind], tokens / runtime)
                    shutil.rmtree(wd, ignore_errors=True)
            ratio = best["reg"] / best["plain"]
            ok = ratio >= goals[name]
            failed |= not ok
            print(f"{name:<15} {best['plain']:>12,.0f} {best['reg']:>10,.0f} {ratio:>6.2f}x "
                  f"{goals[name]:>5.1f}x {'ok' if ok else 'BELOW GOAL'}", flush=True)
            report.measures.append(measure(
                f"training.{name.split('+')[0]}", what[name], best["reg"], "tokens/s",
                reference=best["plain"], reference_name="plain transformers Trainer",
                goal=f">= {goals[name]}x", rounds=rounds,
                notes=f"best of {rounds} alternating rounds, {epochs} epoch(s), real "
                      f"(non-padding) tokens, {threads} torch threads"))
        report.write(args.json)
        # With --json the verdicts are in the report; the exit status says it ran.
        return 1 if failed and args.json is None else 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
