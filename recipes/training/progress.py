"""Training progress: a JSONL log of step metrics (always), a rich progress bar (optional),
and early stopping on validation loss.

The log is ``workdir/train_log.jsonl``, one object per logged step or
evaluation. On resume, lines past the resumed step are dropped first, so a
killed-and-resumed run's log reads as one run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from recipes.core.fsutil import atomic_write_text

LOG_NAME = "train_log.jsonl"


def truncate_log(path: Path, max_step: int) -> None:
    """Keep only the log lines of steps <= ``max_step`` (and drop a torn last line)."""
    if not path.is_file():
        return
    keep: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and int(row.get("step", 0)) <= max_step:
            keep.append(json.dumps(row, sort_keys=True))
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            out.append(row)
    return out


class StepLogger(TrainerCallback):
    """Appends every Trainer log (loss, lr, grad norm, eval loss) plus tokens/s to the JSONL log."""

    def __init__(self, path: Path, progress: bool) -> None:
        self.path = path
        self.show = progress
        self._start = 0.0
        self.tokens_at_start = 0
        self._step0 = 0
        self._bar: Any = None
        self._task: Any = None
        self._last_loss: float | None = None

    def tokens_per_s(self, state: Any) -> float:
        elapsed = time.perf_counter() - self._start
        tokens = state.num_input_tokens_seen - self.tokens_at_start
        return tokens / elapsed if elapsed > 0 else 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start = time.perf_counter()
        self.tokens_at_start = state.num_input_tokens_seen
        self._step0 = state.global_step
        if self.show and state.is_world_process_zero:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]train[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                "train", total=state.max_steps, completed=state.global_step, loss="-", tps="-"
            )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            loss = "-" if self._last_loss is None else f"{self._last_loss:.4f}"
            self._bar.update(
                self._task, completed=state.global_step, loss=loss,
                tps=f"{self.tokens_per_s(state):,.0f}",
            )

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero:  # one writer of several processes
            return
        row: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, "time": time.time()}
        for k, v in logs.items():
            if isinstance(v, int | float):
                row[k] = v
        if "loss" in logs:
            self._last_loss = float(logs["loss"])
            row["tokens_per_s"] = round(self.tokens_per_s(state), 1)
            row["tokens_seen"] = state.num_input_tokens_seen
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self.on_step_end(args, state, control)
            self._bar.stop()
            self._bar = None


@dataclass(frozen=True)
class EarlyStopVerdict:
    stop: bool
    best: float | None
    evaluations_since_best: int


def early_stop_verdict(eval_losses: Sequence[float], patience: int,
                       threshold: float) -> EarlyStopVerdict:
    """Stop after ``patience`` evaluations in a row fail to beat the best by ``threshold``."""
    best: float | None = None
    since = 0
    for loss in eval_losses:
        if best is None or loss < best - threshold:
            best = loss
            since = 0
        else:
            since += 1
    return EarlyStopVerdict(since >= patience, best, since)


class EarlyStopping(TrainerCallback):
    """Early stopping on ``eval_loss``, rebuilt from ``state.log_history``.

    transformers' EarlyStoppingCallback needs ``load_best_model_at_end`` and
    ties checkpoint and evaluation periods together; this reads the eval
    losses already stored in the trainer state, so it survives a resume
    without state of its own.
    """

    def __init__(self, patience: int, threshold: float) -> None:
        self.patience = patience
        self.threshold = threshold

    def on_evaluate(self, args: Any, state: Any, control: Any,
                    metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        losses = [float(r["eval_loss"]) for r in state.log_history if "eval_loss" in r]
        if metrics and "eval_loss" in metrics and (
            not state.log_history or state.log_history[-1].get("eval_loss") != metrics["eval_loss"]
        ):
            losses.append(float(metrics["eval_loss"]))
        if early_stop_verdict(losses, self.patience, self.threshold).stop:
            control.should_training_stop = True
