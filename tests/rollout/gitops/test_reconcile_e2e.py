"""The reconciler end to end: real training on the tiny model, real SQLite and PostgreSQL,
`reg` run as real subprocesses where exit codes, kills and concurrency matter.

Recipes are the example workspace's, shortened (few steps, few evaluation
rows) so each trains in seconds: these tests are about reconciling.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from registry.api import Registry
from registry.settings import Settings
from rollout.gitops.apply import STEPS
from rollout.gitops.reconciler import Reconciler
from tests.support.cli import cli_env, git, reg_cmd, run_reg
from tests.support.factories import RegistryFactory, WorkspaceFactory

pytestmark = pytest.mark.slow


def fast(text: str) -> str:
    """Few steps and few evaluation rows: seconds per model on a CPU."""
    for old, new in (("max_steps: 250", "max_steps: 6"), ("max_steps: 50", "max_steps: 6"),
                     ("max_steps: 40", "max_steps: 6"),
                     ("generation_examples: 8", "generation_examples: 1"),
                     ("generation_examples: 4", "generation_examples: 1"),
                     ("max_examples: 32", "max_examples: 4")):
        text = text.replace(old, new)
    return text


def with_promote(text: str) -> str:
    return fast(text).replace("  deploy:\n    target: vllm\n",
                              "  deploy:\n    target: vllm\n    promote_to: staging\n")


def ready_versions(reg: Registry, model: str) -> list[int]:
    return [v.number for v in reg.list_versions(model) if v.status == "ready"]


def assert_converged(reg: Registry, model: str) -> None:
    """One version per spec hash, its artifact stored intact, no run left half-way."""
    versions = reg.list_versions(model)
    hashes = [v.spec_hash for v in versions]
    assert len(hashes) == len(set(hashes)), hashes
    for v in versions:
        assert v.artifact_digest is not None
        reg.get_artifact(v.artifact_digest)  # its row exists
        assert reg.store.has(v.artifact_digest), f"{v.ref}: manifest blob missing"
    runs = reg.list_runs(model=model)
    assert [r.id for r in runs if r.status in ("queued", "training")] == []


def test_gitops_flow_plan_reconcile_change(
    workspace: WorkspaceFactory, settings: Settings, open_registry: RegistryFactory
) -> None:
    ws = workspace(keep=("support-bot", "faq-bot"), edit={"support-bot": fast, "faq-bot": fast})
    recipes = ws / "recipes"

    plan = run_reg(settings, "plan", str(recipes), "--json")
    assert plan.returncode == 2, plan.stderr
    data = json.loads(plan.stdout)
    assert data["summary"]["train"] == 2
    head = git(ws, "rev-parse", "HEAD")
    assert {m["git"]["commit"] for m in data["models"]} == {head}

    # An invalid recipe blocks only itself.
    (recipes / "bad-bot.yaml").write_text(
        (recipes / "faq-bot.yaml").read_text().replace("name: faq-bot", "name: bad-bot")
        .replace("r: 8", "r: 7"))
    assert run_reg(settings, "plan", str(recipes)).returncode == 1

    reg = open_registry(settings)
    rec = Reconciler(reg, [recipes])
    first = rec.run_once()
    assert sorted((o.model, o.result, o.version) for o in first.outcomes) == [
        ("faq-bot", "registered", 1), ("support-bot", "registered", 1)]
    for model in ("faq-bot", "support-bot"):
        (v1,) = reg.list_versions(model)
        assert (v1.status, v1.git_commit, v1.git_dirty) == ("ready", head, False)
        (run,) = reg.list_runs(model=model)
        assert (run.status, run.version_number, run.git_commit) == ("succeeded", 1, head)
        assert Path(run.workdir).parent == settings.home / "runs"
    assert "bad-bot" not in {m.name for m in reg.list_models()}

    # Nothing changed: nothing trains, and quickly.
    t = time.monotonic()
    second = rec.run_once()
    assert second.outcomes == [] and second.trained == 0
    assert time.monotonic() - t < 5

    (recipes / "bad-bot.yaml").unlink()
    done = run_reg(settings, "plan", str(recipes), "--json")
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["summary"]["in_sync"] == 2

    # A comment is not a change.
    f = recipes / "faq-bot.yaml"
    f.write_text("# reviewed by the docs team\n" + f.read_text())
    git(ws, "commit", "-qam", "comment only")
    assert run_reg(settings, "plan", str(recipes)).returncode == 0
    assert rec.run_once().outcomes == []

    # One byte of data is: v2, with the new commit in its lineage.
    data_file = ws / "data" / "faq.jsonl"
    raw = data_file.read_bytes()
    data_file.write_bytes(raw.replace(b"bravo", b"Bravo", 1))
    git(ws, "commit", "-qam", "fix a capital")
    new_head = git(ws, "rev-parse", "HEAD")
    pending = run_reg(settings, "plan", str(recipes), "--json")
    assert pending.returncode == 2
    faq = next(m for m in json.loads(pending.stdout)["models"] if m["model"] == "faq-bot")
    assert (faq["action"], faq["diff"]["against"]) == ("train", "v1")
    assert faq["diff"]["data_changed"] == ["../data/faq.jsonl"]
    assert faq["diff"]["fields"] == []
    third = rec.run_once()
    assert [(o.model, o.result, o.version) for o in third.outcomes] == [
        ("faq-bot", "registered", 2)]
    v2 = reg.get_version("faq-bot", 2)
    assert (v2.status, v2.git_commit, v2.parent_number) == ("ready", new_head, 1)
    assert ready_versions(reg, "support-bot") == [1]
    for model in ("faq-bot", "support-bot"):
        assert_converged(reg, model)
    kinds = {e.kind for e in reg.events(model="faq-bot")}
    assert {"reconcile.run_started", "reconcile.registered", "run.created",
            "version.registered"} <= kinds


def test_kill_after_every_step_converges_to_one_version(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory
) -> None:
    ws = workspace(keep=("support-bot",), edit={"support-bot": with_promote})
    for step in STEPS:
        cp = run_reg(sqlite_settings, "reconcile", str(ws / "recipes"), "--once",
                     REG_FAULT=f"after:{step}")
        assert cp.returncode == 137, f"{step}: {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    # Killed after promoting, before recording it: this pass records it (never promotes twice).
    final = run_reg(sqlite_settings, "reconcile", str(ws / "recipes"), "--once", "--json")
    assert final.returncode == 0, final.stderr
    assert [(o["action"], o["result"]) for o in json.loads(final.stdout)["outcomes"]] == [
        ("deploy", "deployed")]
    again = run_reg(sqlite_settings, "reconcile", str(ws / "recipes"), "--once", "--json")
    assert json.loads(again.stdout)["outcomes"] == []
    assert run_reg(sqlite_settings, "plan", str(ws / "recipes")).returncode == 0

    reg = open_registry(sqlite_settings)
    (v,) = reg.list_versions("support-bot")
    assert (v.number, v.status, v.stages) == (1, "ready", ["staging"])
    (run,) = reg.list_runs(model="support-bot")  # every pass resumed the same run
    assert (run.status, run.version_number, run.details["deploy"]) == ("succeeded", 1, "done")
    promotions = [e for e in reg.history("support-bot") if e.stage == "staging"]
    assert len(promotions) == 1
    assert_converged(reg, "support-bot")
    log = (Path(run.workdir) / "run.log").read_text()
    assert log.count("started:") == 1 and log.count("resumed:") >= 3


def test_sigkill_during_training_resumes_from_its_checkpoint(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory
) -> None:
    def long_run(text: str) -> str:
        return fast(text).replace("max_steps: 6", "max_steps: 400\n"
                                  "    checkpoint_every_steps: 10")

    ws = workspace(keep=("support-bot",), edit={"support-bot": long_run})
    runs = sqlite_settings.home / "runs"
    proc = subprocess.Popen(reg_cmd("reconcile", str(ws / "recipes"), "--once"),
                            env=cli_env(sqlite_settings), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any(runs.glob("*/checkpoint-*")):
            assert proc.poll() is None, "the reconciler ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        time.sleep(random.uniform(0.0, 1.0))  # a random moment after the first checkpoint
        assert proc.poll() is None, "training finished before the kill; lengthen it"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    reg = open_registry(sqlite_settings)
    (run,) = reg.list_runs(model="support-bot")
    assert run.status == "training"  # what a kill leaves: the next pass resumes it
    report = Reconciler(reg, [ws / "recipes"]).run_once()
    assert [(o.result, o.run_id) for o in report.outcomes] == [("registered", run.id)]
    (v,) = reg.list_versions("support-bot")
    resumed = v.metrics["train"]["resumed_from_step"]
    assert resumed is not None and resumed >= 10
    assert v.metrics["train"]["steps"] == 400
    assert_converged(reg, "support-bot")


def test_two_reconcilers_at_once_train_each_hash_once(
    workspace: WorkspaceFactory, settings: Settings, open_registry: RegistryFactory
) -> None:
    ws = workspace(keep=("support-bot", "faq-bot"), edit={"support-bot": fast, "faq-bot": fast})
    open_registry(settings)  # migrate first, so the two race on the lease, not the schema
    procs = [subprocess.Popen(reg_cmd("reconcile", str(ws / "recipes"), "--once", "--json",
                                      "--wait-lease", "600"),
                              env=cli_env(settings), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trained = sorted(sum(o["trained"] for o in json.loads(out)["outcomes"]) for out, _ in outs)
    assert trained == [0, 2]  # one did the work; the other waited, then found it done
    reg = open_registry(settings)
    for model in ("support-bot", "faq-bot"):
        assert len(reg.list_runs(model=model)) == 1
        assert ready_versions(reg, model) == [1]
        assert_converged(reg, model)


def test_reg_logs_shows_a_failed_run(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory
) -> None:
    def unloadable_base(text: str) -> str:
        return fast(text).replace("../models/tiny-llama", "../models/broken-llama")

    ws = workspace(keep=("support-bot",), edit={"support-bot": unloadable_base})
    broken = ws / "models" / "broken-llama"
    broken.mkdir()
    for f in (ws / "models" / "tiny-llama").iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    cp = run_reg(sqlite_settings, "reconcile", str(ws / "recipes"), "--once")
    assert cp.returncode == 1
    reg = open_registry(sqlite_settings)
    (run,) = reg.list_runs(model="support-bot")
    assert run.status == "failed" and run.error
    logs = run_reg(sqlite_settings, "logs", str(run.id), "--json")
    assert logs.returncode == 0, logs.stderr
    shown = json.loads(logs.stdout)
    assert shown["run"]["status"] == "failed"
    assert any("FAILED in train" in line for line in shown["log"])
    assert {e["kind"] for e in shown["events"]} >= {"reconcile.run_started", "reconcile.failed"}
    human = run_reg(sqlite_settings, "logs", str(run.id))
    assert "error:" in human.stdout and "FAILED in train" in human.stdout



def test_failed_gate_registers_rejected_and_is_not_retrained(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory
) -> None:
    def impossible_gate(text: str) -> str:
        return with_promote(text).replace(
            "  evaluation:\n", "  evaluation:\n    gates:\n      max_perplexity: 1.0001\n", 1)

    ws = workspace(keep=("faq-bot",), edit={"faq-bot": impossible_gate})
    reg = open_registry(sqlite_settings)
    rec = Reconciler(reg, [ws / "recipes"])
    (outcome,) = rec.run_once().outcomes
    assert (outcome.result, outcome.version) == ("rejected", 1)
    (v,) = reg.list_versions("faq-bot")
    assert (v.status, v.gates_passed, v.stages) == ("rejected", False, [])  # not promoted
    (run,) = reg.list_runs(model="faq-bot")
    assert run.status == "rejected"
    (event,) = [e for e in reg.events(model="faq-bot") if e.kind == "reconcile.rejected"]
    assert "max_perplexity=" in event.message and "threshold 1.0001" in event.message
    plan, _ = rec.plan()
    assert plan.models[0].action.value == "in_sync" and plan.exit_code == 0
    assert rec.run_once().outcomes == []
