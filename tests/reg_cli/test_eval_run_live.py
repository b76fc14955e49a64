"""`reg eval run` against the live stack: the real gateway and ONE real vLLM serving
support-bot, through the official openai client, stored in the session's real registry.

v2 ("bravo") is measured again on its recipe's test and general sets, rebuilt from the
session's workspace (whose data v2 was trained on last); its losses and scores must match
its registration metrics. Then a v3 registered from v2's very weights with recorded
metrics better than they are is served from staging: re-evaluating it flags the
regression and exits 1; out of staging, its run fails with the gateway's 404, stored."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from recipes.artifact import write_manifest
from registry.api import Registry
from registry.settings import Settings
from tests.support.adapters import MODEL
from tests.support.cli import run_reg
from tests.support.figures import record
from tests.support.gateway import Server
from tests.support.live_stack import set_baseline

TIMEOUT_S = 400


def _workspace_recipe(adapter: Path) -> Path:
    """The session workspace's support-bot recipe (tests.support.live_fixtures writes the
    workspace beside the adapters' run folders)."""
    for parent in adapter.parents:
        found = parent / "ws" / "recipes" / f"{MODEL}.yaml"
        if found.is_file():
            return found
    raise AssertionError(f"no workspace above {adapter}")


def _served(url: str, ref: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        ids = [m["id"] for m in httpx.get(url + "/v1/models", timeout=30).json()["data"]]
        if ref in ids:
            return
        assert time.monotonic() < deadline, f"{ref} not served; served: {ids}"
        time.sleep(0.2)


def _eval_run(reg_home: Path, *args: str, codes: tuple[int, ...] = (0, 1)
              ) -> tuple[int, dict[str, Any], str]:
    p = run_reg(Settings.for_home(reg_home), "eval", "run", *args, "--json", timeout=TIMEOUT_S)
    assert p.returncode in codes, f"exit {p.returncode}:\n{p.stdout}\n{p.stderr}"
    doc: dict[str, Any] = json.loads(p.stdout)
    return p.returncode, doc, p.stderr


@pytest.mark.slow
def test_the_served_version_measures_as_registered_and_the_run_is_stored(
        stack: Server, live_registry: Registry, reg_home: Path,
        trained_adapters: dict[int, Path]) -> None:
    set_baseline(live_registry)  # v1 production, v2 canary
    recipe = _workspace_recipe(trained_adapters[2])
    code, run, _ = _eval_run(reg_home, f"{MODEL}:canary", "--gateway", stack.url,
                             "--recipe", str(recipe), "--losses")
    v2 = live_registry.get_version(MODEL, 2)
    registered = v2.metrics
    assert run["version"] == 2 and run["error"] is None and run["gateway"] == stack.url
    m = run["metrics"]
    # The engine's echoed log-probabilities score the same tokens registration scored.
    for split in ("validation", "test", "general"):
        assert m[f"{split}.loss"] == pytest.approx(registered[split]["loss"], rel=1e-3)
        assert m[f"{split}.perplexity"] == pytest.approx(math.exp(m[f"{split}.loss"]))
    # Greedy answers through the chat API score as registration's decoding did.
    for key in ("exact_match", "contains", "rouge_l"):
        assert m[f"generation.{key}"] == pytest.approx(registered["generation"][key], abs=1e-6)
    assert code == 0 and run["regressed_metrics"] == []
    assert {c["metric"] for c in run["checks"]} == set(m)
    assert "test.base_loss" in run["skipped"] and "base model" in run["skipped"]["test.base_loss"]
    stored = live_registry.eval_runs(MODEL, 2)[-1]
    assert stored.id == run["id"] and stored.metrics == m
    record("re-evaluation", "requests through the gateway", run["requests"], "requests")


@pytest.mark.slow
def test_a_version_whose_records_beat_what_it_serves_is_flagged(
        stack: Server, live_registry: Registry, reg_home: Path,
        trained_adapters: dict[int, Path], tmp_path: Path) -> None:
    import shutil

    set_baseline(live_registry)
    # v2's weights, registered again with a recorded test loss half what they give.
    art = tmp_path / "boasting"
    shutil.copytree(trained_adapters[2], art)
    metrics = json.loads((art / "metrics.json").read_text())
    metrics["test"]["loss"] /= 2
    metrics["test"]["perplexity"] = math.exp(metrics["test"]["loss"])
    (art / "metrics.json").write_text(json.dumps(metrics))
    manifest = json.loads((art / "manifest.json").read_text())
    identity = {**manifest["identity"], "spec_hash": manifest["identity"]["spec_hash"] + "0"}
    (art / "manifest.json").unlink()
    write_manifest(art, identity, {k: v for k, v in manifest.items()
                                   if k not in ("identity", "files", "manifest_version")})
    boasting = live_registry.register_artifact(art)
    try:
        live_registry.promote(MODEL, boasting.number, "staging", reason="eval run test")
        _served(stack.url, f"{MODEL}@v{boasting.number}")
        code, run, _ = _eval_run(reg_home, f"{MODEL}@v{boasting.number}", "--gateway",
                                 stack.url, "--recipe",
                                 str(_workspace_recipe(trained_adapters[2])), "--losses")
    finally:
        live_registry.clear_stage(MODEL, "staging", reason="eval run test")
        set_baseline(live_registry)
    assert code == 1
    assert run["regressed_metrics"] == ["test.loss", "test.perplexity"]
    check = next(c for c in run["checks"] if c["metric"] == "test.loss")
    assert check["registered"] == pytest.approx(metrics["test"]["loss"])
    assert check["measured"] > check["allowed"] == pytest.approx(metrics["test"]["loss"] * 1.05)
    assert live_registry.eval_runs(MODEL, boasting.number)[-1].regressed_metrics == [
        "test.loss", "test.perplexity"]

    # Out of staging, the gateway no longer serves it: a failed run, stored with why (exit 2).
    code, failed, _ = _eval_run(reg_home, f"{MODEL}@v{boasting.number}", "--gateway", stack.url,
                                "--recipe", str(_workspace_recipe(trained_adapters[2])),
                                codes=(2,))
    assert failed["metrics"] == {} and failed["error"].startswith(
        f"HTTP 404: The model '{MODEL}@v{boasting.number}' is not deployed")
    assert live_registry.eval_runs(MODEL, boasting.number)[-1].error == failed["error"]
