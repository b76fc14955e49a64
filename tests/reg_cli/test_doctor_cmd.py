"""`reg doctor` as a user runs it: a real process over the example workspace and a real
(empty) registry; the table for people, --json for scripts, and the exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recipes.scaffold.example import write_example_workspace
from registry.settings import Settings
from tests.support.cli import run_reg
from tests.support.services import free_port


@pytest.fixture
def ws(tiny_model_dir: Path, tmp_path: Path) -> Path:
    root = write_example_workspace(tmp_path / "ws", model_from=tiny_model_dir)
    for f in (root / "recipes").glob("*.yaml"):
        if f.stem != "support-bot":
            f.unlink()
    return root


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/r.db",
                    artifact_store=str(tmp_path / "store"))


def test_warnings_only_exit_0_with_a_table_per_subject(ws: Path, settings: Settings) -> None:
    done = run_reg(settings, "doctor", str(ws / "recipes"), COLUMNS="200")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "support-bot" in out and "workspace" in out
    for title in ("Held-out test split", "PII redacted", "Rollout plan with a minimum sample",
                  "Metrics scraped"):
        assert title in out
    assert "REG_PROMETHEUS_URL" in out and "0 failed" in out


def test_a_failed_item_exits_1_and_json_names_it_with_its_fix(
        ws: Path, settings: Settings) -> None:
    recipe = ws / "recipes" / "support-bot.yaml"
    recipe.write_text(recipe.read_text().replace("redact_pii: true", "redact_pii: false"))
    shutil.rmtree(ws / ".reg", ignore_errors=True)
    done = run_reg(settings, "doctor", str(ws / "recipes"), "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads(done.stdout)  # nothing else on stdout
    assert doc["exit_code"] == 1 and doc["counts"]["fail"] == 1
    (failed,) = [f for f in doc["findings"] if f["status"] == "fail"]
    assert (failed["subject"], failed["item"]) == ("support-bot", "data-pii")
    assert failed["fix"] == "set data.clean.redact_pii: true"
    assert {f["subject"] for f in doc["findings"]} == {"support-bot", "workspace"}


def test_a_folder_without_recipes_is_the_loaders_problem_and_fails(
        tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "empty").mkdir()
    done = run_reg(settings, "doctor", str(tmp_path / "empty"), "--json")
    assert done.returncode == 1
    (first, *_) = json.loads(done.stdout)["findings"]
    assert (first["item"], first["status"]) == ("recipe-valid", "fail")
    assert "no recipe files" in first["detail"] and "reg init DIR --example" in first["detail"]


def test_prometheus_is_asked_where_reg_prometheus_url_points(
        ws: Path, settings: Settings) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the item fails, naming it
    done = run_reg(settings, "doctor", str(ws / "recipes"), "--json", REG_PROMETHEUS_URL=url)
    assert done.returncode == 1, done.stdout + done.stderr
    (item,) = [f for f in json.loads(done.stdout)["findings"] if f["item"] == "metrics-scraped"]
    assert item["status"] == "fail" and f"cannot read {url}/api/v1/targets" in item["detail"]
