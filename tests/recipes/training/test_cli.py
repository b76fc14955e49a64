"""`reg train`, `reg estimate`, `reg advise` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.factories import LoadedRecipeFactory
from tests.support.paths import REPO


def _reg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reg_cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_reg_train_prints_base_vs_tuned_and_writes_the_artifact(
    make_recipe: LoadedRecipeFactory, tmp_path: Path
) -> None:
    loaded = make_recipe("support-bot", name="cli", **{
        "spec.training.max_steps": 6, "spec.evaluation.generation_examples": 2,
        "spec.evaluation.gates": {"max_perplexity": 100000.0}})
    out = tmp_path / "run"
    proc = _reg("train", str(loaded.path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Evaluation: base vs tuned" in proc.stdout
    assert "Gates passed" in proc.stdout
    assert (out / "artifact" / "manifest.json").is_file()
    again = _reg("train", str(loaded.path), "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    data = json.loads(again.stdout)
    assert data["steps"] == 6 and data["gates_passed"] is True
    assert data["metrics"]["test"]["base_perplexity"] > data["metrics"]["test"]["perplexity"]


def test_reg_train_on_a_broken_recipe_names_the_problem_and_writes_nothing(
    workspace: Path, tmp_path: Path
) -> None:
    bad = workspace / "recipes" / "broken.yaml"
    bad.write_text((workspace / "recipes" / "support-bot.yaml").read_text()
                   .replace("name: support-bot", "name: broken")
                   .replace("max_steps: 250", "max_stepz: 250"))
    out = tmp_path / "run"
    proc = _reg("train", str(bad), "--out", str(out))
    assert proc.returncode == 1
    assert "max_stepz" in proc.stderr and "did you mean 'max_steps'" in proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_reg_estimate_and_advise_print_their_tables(workspace: Path) -> None:
    recipe = str(workspace / "recipes" / "support-bot.yaml")
    est = _reg("estimate", recipe)
    assert est.returncode == 0, est.stderr[-3000:]
    assert "590,464 parameters" in est.stdout and "H100 80GB" in est.stdout
    assert "time = 6 x params x training tokens" in est.stdout
    data = json.loads(_reg("estimate", recipe, "--json").stdout)
    assert {m["method"] for m in data["memory"]} == {"full", "lora", "qlora"}
    adv = _reg("advise", recipe, "--json")
    assert adv.returncode == 0, adv.stderr[-3000:]
    advice = json.loads(adv.stdout)
    assert advice["approach"] == "fine_tuning"
    assert advice["signals"]["changes_per_month"] is None  # not a git repository
    assert advice["signals"]["dominant_shape"] == "starts with 'alpha'"
