"""`reg init`, `reg validate`, `reg data` and `reg schema`, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.support.factories import RecipeFactory


def reg(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "reg_cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_init_example_then_validate(tmp_path: Path) -> None:
    ws = tmp_path / "demo"
    done = reg("init", str(ws), "--example")
    assert done.returncode == 0, done.stderr
    assert "Next:" in done.stdout
    assert sorted(p.name for p in (ws / "recipes").iterdir()) == [
        "faq-bot.yaml", "polite-dpo.yaml", "support-bot.yaml"]
    assert (ws / "models" / "tiny-llama" / "model.safetensors").is_file()
    assert (ws / ".gitignore").read_text().splitlines()[-1] == ".reg/"
    checked = reg("validate", str(ws / "recipes"), "--json")
    assert checked.returncode == 0, checked.stderr
    assert len(json.loads(checked.stdout)["valid"]) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_init_without_example(tmp_path: Path) -> None:
    done = reg("init", str(tmp_path / "ws"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"workspace": str(tmp_path / "ws"), "recipes": [],
                                       "example": False}
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == [
        ".gitignore", "recipe.schema.json", "recipes"]


def test_init_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    done = reg("init", str(tmp_path))
    assert done.returncode == 1
    assert "is not empty" in done.stderr and "--force" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    forced = reg("init", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    assert (tmp_path / "recipes").is_dir()


def test_validate_lists_every_broken_file(write_recipe: RecipeFactory, workspace: Path,
                                          delete: object) -> None:
    write_recipe("a-typo", **{"spec.training.max_stepz": 5})
    write_recipe("b-nodata", **{"spec.data.sources.0.path": "../data/gone.jsonl"})
    write_recipe("c-nomodel", **{"spec.base_model": delete})
    (workspace / "recipes" / "d-syntax.yaml").write_text("kind: Recipe\n  bad: [\n")
    (workspace / "recipes" / "zz-dup.yaml").write_text(
        (workspace / "recipes" / "faq-bot.yaml").read_text())
    done = reg("validate", "recipes", cwd=workspace)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("recipes/")]
    assert [line.split(":")[0] for line in lines] == [
        "recipes/a-typo.yaml", "recipes/b-nodata.yaml", "recipes/c-nomodel.yaml",
        "recipes/d-syntax.yaml", "recipes/zz-dup.yaml"]
    assert all(line.split(":")[1].isdigit() for line in lines)
    assert "did you mean 'max_steps'?" in lines[0]
    assert "5 problem(s) in 5 file(s)" in done.stderr
    assert "Traceback" not in done.stderr


def test_validate_json_lists_problems(write_recipe: RecipeFactory, workspace: Path) -> None:
    path = write_recipe("bad", **{"spec.adapter.r": 7})
    done = reg("validate", str(path), "--json")
    assert done.returncode == 1
    problems = json.loads(done.stdout)["problems"]
    assert [(p["field"], p["got"]) for p in problems] == [("spec.adapter.r", "7")]


def test_data_prints_report_and_writes_splits(workspace: Path) -> None:
    done = reg("data", "recipes/support-bot.yaml", cwd=workspace)
    assert done.returncode == 0, done.stderr
    for title in ("Sources of support-bot", "Cleaning", "Splits"):
        assert title in done.stdout
    assert "PII redacted" in done.stdout and "credit_card" in done.stdout
    out = workspace / ".reg" / "data" / "support-bot"
    assert sorted(p.name for p in out.iterdir()) == [
        "data_report.json", "test.jsonl", "train.jsonl", "validation.jsonl"]


def test_data_json_and_out(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "faq-data"
    done = reg("data", str(workspace / "recipes" / "faq-bot.yaml"), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["out_dir"] == str(out)
    assert report["mix"]["strategy"] == "temperature"
    assert json.loads((out / "data_report.json").read_text())["splits"] == report["splits"]


def test_data_error_is_a_message_not_a_traceback(write_recipe: RecipeFactory,
                                                 workspace: Path) -> None:
    path = write_recipe("cramped", **{"spec.training.max_seq_length": 12,
                                      "spec.data.clean.max_tokens": None})
    done = reg("data", str(path))
    assert done.returncode == 1
    assert "Error:" in done.stderr and "Hint: raise training.max_seq_length" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (workspace / ".reg").exists()


def test_data_on_an_invalid_recipe(write_recipe: RecipeFactory) -> None:
    path = write_recipe("typo", **{"spec.training.max_stepz": 5})
    done = reg("data", str(path))
    assert done.returncode == 1
    assert f"{path}:" in done.stderr and "max_stepz" in done.stderr


def test_schema_matches_the_workspace_copy_and_validates_examples(workspace: Path) -> None:
    import jsonschema

    done = reg("schema")
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema == json.loads((workspace / "recipe.schema.json").read_text())
    yaml = YAML(typ="safe")
    for recipe in sorted((workspace / "recipes").glob("*.yaml")):
        text = recipe.read_text()
        assert text.startswith("# yaml-language-server: $schema=../recipe.schema.json")
        jsonschema.validate(yaml.load(text), schema)
    with pytest.raises(jsonschema.ValidationError, match="max_stepz"):
        jsonschema.validate({"apiVersion": "reg/v1", "kind": "Recipe",
                             "metadata": {"name": "x"},
                             "spec": {"base_model": {"path": "m"},
                                      "data": {"sources": [{"path": "d.jsonl"}]},
                                      "training": {"max_stepz": 1}}}, schema)
