"""Crash safety: SIGKILL a real training subprocess, then train again and finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recipes.artifact import verify_manifest
from recipes.training.checkpoint import list_checkpoints
from recipes.training.entry import FINAL_DIR, SUMMARY_FILE, train
from recipes.training.progress import read_log
from tests.support.factories import LoadedRecipeFactory
from tests.support.paths import REPO

pytestmark = pytest.mark.slow

CHILD = """
import sys
from pathlib import Path
from recipes.loading.loader import load_recipe
from recipes.training.entry import train
train(load_recipe(Path(sys.argv[1])), Path(sys.argv[2]), progress=False)
"""


def _run_until(recipe: Path, workdir: Path, ready: Callable[[], bool], timeout: float) -> bool:
    """Train in a subprocess, SIGKILL it once ``ready()``; False if it finished first."""
    repo = REPO
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(recipe), str(workdir)], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return True
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                assert proc.returncode == 0, err[-3000:]
                return False
            time.sleep(0.05)
        raise AssertionError(f"training did not reach the kill point in {timeout} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_sigkill_during_training_then_resume_finishes_from_the_checkpoint(
    make_recipe: LoadedRecipeFactory, tmp_path: Path
) -> None:
    loaded = make_recipe("support-bot", name="killed", **{
        "spec.evaluation.general": None, "spec.evaluation.generation_examples": 2,
        "spec.training.max_steps": 200, "spec.training.checkpoint_every_steps": 10,
        "spec.training.keep_checkpoints": 2,
    })
    workdir = tmp_path / "w"
    killed = _run_until(loaded.path, workdir,
                        lambda: any(step >= 20 for step, _ in list_checkpoints(workdir)),
                        timeout=600)
    assert killed, "the run finished before it could be killed; raise max_steps"
    steps_before = [step for step, _ in list_checkpoints(workdir)]
    assert steps_before and len(steps_before) <= 2  # rotation kept the last K
    assert not (workdir / "artifact").exists()

    result = train(loaded, workdir, progress=False)
    assert result.resumed_from_step is not None and result.resumed_from_step >= 20
    assert result.resumed_from_step == max(steps_before)
    assert result.steps == 200
    verify_manifest(result.artifact_dir)
    steps = [int(r["step"]) for r in read_log(result.artifact_dir / "train_log.jsonl")
             if "loss" in r]
    assert steps == sorted(set(steps)), "the log repeats or reorders steps"
    assert steps[-1] == 200
    assert not [p for p in workdir.iterdir() if p.name.startswith(".tmp")]


def test_sigkill_after_training_finishes_with_evaluation_only(
    make_recipe: LoadedRecipeFactory, tmp_path: Path
) -> None:
    loaded = make_recipe("support-bot", name="killed-late", **{
        "spec.training.max_steps": 10, "spec.evaluation.generation_examples": 8,
    })
    workdir = tmp_path / "w"
    killed = _run_until(loaded.path, workdir,
                        lambda: (workdir / FINAL_DIR / SUMMARY_FILE).is_file(), timeout=600)
    summary_mtime = (workdir / FINAL_DIR / SUMMARY_FILE).stat().st_mtime_ns
    result = train(loaded, workdir, progress=False)
    verify_manifest(result.artifact_dir)
    assert result.steps == 10
    if killed:
        # Training was not redone: final/ is the one the killed run wrote.
        assert (workdir / FINAL_DIR / SUMMARY_FILE).stat().st_mtime_ns == summary_mtime
