"""training.distributed: real torchrun (gloo) runs of the tiny Llama on the CPU.

Two processes at batch 2 log the loss curve of one process at batch 4 (the same effective
batch, the same seed); a rank killed mid-run fails the run promptly, with the workers'
output, and the next attempt resumes from the checkpoint rank 0 wrote.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from recipes.core.errors import RegError
from recipes.training.checkpoint import list_checkpoints
from recipes.training.distributed import LAUNCH_FILE
from recipes.training.entry import FINAL_DIR, SUMMARY_FILE, TrainResult, train
from recipes.training.progress import read_log
from tests.support.factories import LoadedRecipeFactory
from tests.support.figures import record

pytestmark = pytest.mark.slow

# Largest difference allowed between the two runs' logged losses at any step (nats/token);
# measured: docs/training.md, "Several processes per run".
LOSS_TOLERANCE = 1e-4
STEPS = 8


def _losses(result: TrainResult) -> list[float]:
    rows = read_log(result.artifact_dir / "train_log.jsonl")
    return [float(r["loss"]) for r in rows if "loss" in r]


def _common(name: str, **extra: Any) -> dict[str, Any]:
    return {"spec.evaluation.general": None, "spec.evaluation.generation_examples": 1,
            "spec.training.max_steps": STEPS, "spec.training.checkpoint_every_steps": 4,
            "spec.training.seed": 7, **extra}


def test_two_processes_log_the_loss_curve_of_one_with_the_same_effective_batch(
    make_recipe: LoadedRecipeFactory, tmp_path: Path,
) -> None:
    one = make_recipe("support-bot", name="one-proc", **_common(
        "one", **{"spec.training.batch_size": 4}))
    two = make_recipe("support-bot", name="two-procs", **_common(
        "two", **{"spec.training.batch_size": 2,
                  "spec.training.distributed": {"nproc_per_node": 2}}))
    single = train(one, tmp_path / "one", progress=False)
    double = train(two, tmp_path / "two", progress=False)

    a, b = _losses(single), _losses(double)
    assert len(a) == len(b) == STEPS, (a, b)
    worst = max(abs(x - y) for x, y in zip(a, b, strict=True))
    record("training.distributed", "loss curve, 2 x batch 2 vs 1 x batch 4",
           f"largest step difference {worst:.2e} over {STEPS} steps (first loss {a[0]:.4f})")
    assert worst <= LOSS_TOLERANCE, list(zip(a, b, strict=True))
    assert a[-1] < a[0]  # it learned, so the comparison is of a moving curve

    summary = json.loads((tmp_path / "two" / FINAL_DIR / SUMMARY_FILE).read_text())
    assert summary["distributed"] == {"nproc_per_node": 2, "backend": "gloo"}
    assert double.steps == STEPS
    # Rank 0 alone wrote the checkpoints and the log: one row per step, each step once.
    steps = [int(r["step"]) for r in read_log(tmp_path / "two" / "train_log.jsonl")
             if "loss" in r]
    assert steps == list(range(1, STEPS + 1))
    assert [s for s, _ in list_checkpoints(tmp_path / "two")] == [4, 8]
    assert not [p for p in (tmp_path / "two").iterdir() if p.name.startswith(".tmp")]
    assert (tmp_path / "two" / LAUNCH_FILE).exists() is False


def _workers(workdir: Path) -> dict[int, int]:
    """pid by rank of the live torchrun workers of ``workdir``'s run (read from /proc)."""
    launch = str(workdir / LAUNCH_FILE).encode()
    out: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"worker" not in argv or launch not in argv:
                continue
            env = dict(e.split(b"=", 1) for e in (proc / "environ").read_bytes().split(b"\0")
                       if b"=" in e)
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # it ended while we looked
            continue
        if state != "Z":
            out[int(env[b"RANK"])] = int(proc.name)
    return out


def test_a_killed_rank_fails_the_run_promptly_and_the_next_attempt_resumes(
    make_recipe: LoadedRecipeFactory, tmp_path: Path,
) -> None:
    loaded = make_recipe("support-bot", name="rank-killed", **_common(
        "killed", **{"spec.training.batch_size": 2, "spec.training.max_steps": 60,
                     "spec.training.checkpoint_every_steps": 5,
                     "spec.training.distributed": {"nproc_per_node": 2}}))
    workdir = tmp_path / "w"
    failure: list[BaseException] = []

    def attempt() -> None:
        try:
            train(loaded, workdir, progress=False)
        except BaseException as e:  # handed to the test's thread
            failure.append(e)

    runner = threading.Thread(target=attempt, daemon=True)
    runner.start()
    deadline = time.monotonic() + 300
    while not list_checkpoints(workdir):
        assert runner.is_alive(), f"the run ended before its first checkpoint: {failure}"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    workers = _workers(workdir)
    assert sorted(workers) == [0, 1], workers
    os.kill(workers[1], signal.SIGKILL)
    killed_at = time.monotonic()
    runner.join(timeout=300)
    assert not runner.is_alive(), "the launch hung after a rank died"
    took = time.monotonic() - killed_at
    record("training.distributed", "a killed rank fails the run after", f"{took:.1f}", "s")
    # torchrun notices a dead worker within its monitor interval and stops the other; the
    # bound is there to tell a prompt failure from the process group's 30-minute timeout.
    assert took < 120, took

    assert len(failure) == 1 and isinstance(failure[0], RegError), failure
    message = str(failure[0])
    assert "distributed training (2 processes, gloo) failed" in message, message
    assert "rank      : 1" in message and "SIGKILL" in message, message  # torchrun's summary
    assert _workers(workdir) == {}, "a worker outlived the failed run"
    with (workdir / ".lock").open("a") as f:  # the lock went with the run
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    assert not (workdir / "artifact").exists()
    kept = [step for step, _ in list_checkpoints(workdir)]

    result = train(loaded, workdir, progress=False)
    assert result.resumed_from_step == max(kept)
    assert result.steps == 60
    steps = [int(r["step"]) for r in read_log(result.artifact_dir / "train_log.jsonl")
             if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 60, steps
