"""`reg versions`, `reg show`, `reg diff`: the metrics training writes, the model's metadata."""

from __future__ import annotations

import json

import pytest

from registry.settings import Settings
from tests.support.cli import reg_fails, reg_ok
from tests.support.factories import ArtifactFactory


def _rows(text: str, columns: int) -> dict[str, list[str]]:
    """A rich table's rows by first cell (tables of ``columns`` columns only)."""
    return {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in text.splitlines() if line.count("│") == columns + 1}


def test_versions_and_show_read_the_metrics_that_training_writes(
    settings: Settings, make_artifact: ArtifactFactory
) -> None:
    # The layout of recipes.evaluation.report's metrics.json: per split, tuned and base.
    metrics = {
        "validation": {"loss": 1.5, "base_loss": 2.5, "perplexity": 4.48, "base_perplexity": 12.2},
        "test": {"loss": 1.25, "base_loss": 2.75, "examples": 35},
        "generation": {"exact_match": 0.5, "base_exact_match": 0.0,
                       "samples": [{"prompt": "p", "output": "o"}]},
        "gates_passed": True,
        "gates": [{"gate": "max_perplexity", "value": 4.48, "threshold": 10.0, "passed": True,
                   "reason": "4.48 <= 10"}],
    }
    reg_ok(settings, "register", str(make_artifact(metrics=metrics)))
    versions = reg_ok(settings, "versions").stdout
    assert "test loss (base)" in versions and "1.25 (2.75)" in versions
    show = reg_ok(settings, "show", "v1").stdout
    rows = _rows(show, 3)
    assert rows["validation.loss"] == ["1.5", "2.5"]
    assert rows["validation.perplexity"] == ["4.48", "12.2"]
    assert rows["generation.exact_match"] == ["0.5", "0"]
    assert rows["test.examples"] == ["35", ""]
    assert "validation.base_loss" not in rows and "generation.samples" not in show
    assert "max_perplexity" in show and "4.48 <= 10" in show


def test_a_hand_made_flat_loss_fills_the_loss_column(
    settings: Settings, make_artifact: ArtifactFactory
) -> None:
    reg_ok(settings, "register", str(make_artifact(metrics={"eval_loss": 1.75})))
    assert "1.75" in reg_ok(settings, "versions").stdout


def test_show_lists_the_models_metadata_and_the_base_models_revision(
    settings: Settings, make_artifact: ArtifactFactory
) -> None:
    recipe = ("apiVersion: reg/v1\nkind: Recipe\nmetadata:\n  name: support-bot\n"
              "  description: Answers tickets\n  owner: support-team\n"
              "  labels: {team: support, tier: gold}\nspec: {}\n")
    reg_ok(settings, "register", str(make_artifact(
        recipe_text=recipe, deploy={"base_model_revision": "2024-06"})))
    rows = _rows(reg_ok(settings, "show", "v1").stdout, 2)
    assert rows["base model"] == ["/models/tiny-llama (revision 2024-06)"]
    assert rows["description"] == ["Answers tickets"]
    assert rows["owner"] == ["support-team"]
    assert rows["labels"] == ["team=support, tier=gold"]


def test_show_diff_runs_events(settings: Settings, make_artifact: ArtifactFactory) -> None:
    reg_ok(settings, "register", str(make_artifact(recipe_text="a: 1\nlr: 0.1\n")))
    reg_ok(settings, "register", str(make_artifact(recipe_text="a: 1\nlr: 0.2\n")))
    show = json.loads(reg_ok(settings, "show", "v1", "--json").stdout)
    assert show["adapter_name"] == "support-bot@v1"
    assert {f["path"] for f in show["artifact"]["files"]} >= {"adapter_model.safetensors",
                                                              "adapter_config.json"}
    human = reg_ok(settings, "show", "support-bot@v1").stdout
    assert "max_eval_loss" in human and "adapter_model.safetensors" in human
    diff = json.loads(reg_ok(settings, "diff", "v1", "v2", "--json").stdout)
    assert "-lr: 0.1" in diff["recipe_diff"] and "+lr: 0.2" in diff["recipe_diff"]
    loss = next(d for d in diff["metrics"] if d["metric"] == "eval_loss")
    assert loss["delta"] == pytest.approx(-0.1)
    assert diff["data_changed"] == ["data/train.jsonl"]


def test_a_status_filter_takes_only_statuses(
    settings: Settings, make_artifact: ArtifactFactory
) -> None:
    reg_ok(settings, "register", str(make_artifact(gates_passed=False)))
    rejected = json.loads(reg_ok(settings, "versions", "--status", "rejected", "--json").stdout)
    assert [v["status"] for v in rejected] == ["rejected"]
    assert json.loads(reg_ok(settings, "versions", "--status", "ready", "--json").stdout) == []
    bad = reg_fails(settings, "versions", "--status", "good")
    assert bad.returncode == 2 and "'good' is not one of" in bad.stderr
    assert "Traceback" not in bad.stderr
