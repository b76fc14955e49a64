"""``deploy.promote_to`` passes the same deploy guards as `reg promote`: `reg reconcile` opens
the registry with serving's adapter-slot guard, and the registry runs it in the promotion's
transaction. Real training on the tiny model (a few steps), a real registry.
"""

from __future__ import annotations

import json

import pytest

from registry.settings import Settings
from tests.support.cli import run_reg
from tests.support.factories import RegistryFactory, WorkspaceFactory

pytestmark = pytest.mark.slow


def fast_promoted(text: str) -> str:
    """Seconds of training per model, and each new ready version promoted to staging."""
    for old, new in (("max_steps: 250", "max_steps: 6"), ("max_steps: 50", "max_steps: 6"),
                     ("max_steps: 40", "max_steps: 6"),
                     ("generation_examples: 8", "generation_examples: 1"),
                     ("generation_examples: 4", "generation_examples: 1"),
                     ("max_examples: 32", "max_examples: 4"),
                     ("  deploy:\n    target: vllm\n",
                      "  deploy:\n    target: vllm\n    promote_to: staging\n")):
        text = text.replace(old, new)
    assert "promote_to: staging" in text
    return text


def test_promote_to_beyond_the_adapter_slots_is_refused_in_a_reconcile(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory
) -> None:
    """Two models on one base model, one adapter slot: the second promotion is refused."""
    ws = workspace(keep=("faq-bot", "support-bot"),
                   edit={"faq-bot": fast_promoted, "support-bot": fast_promoted})
    cp = run_reg(sqlite_settings, "reconcile", str(ws / "recipes"), "--once", "--json",
                 REG_MAX_LORAS="1")
    outcomes = {o["model"]: o for o in json.loads(cp.stdout)["outcomes"]}
    assert {m: o["result"] for m, o in outcomes.items()} == {
        "faq-bot": "registered", "support-bot": "registered"}, cp.stdout
    refused = [m for m, o in outcomes.items() if o["error"]]
    assert len(refused) == 1, cp.stdout
    (model,) = refused
    (other,) = set(outcomes) - {model}
    error = outcomes[model]["error"]
    assert error.startswith("deploy: 2 versions would be deployed on the engine"), error
    assert "but it has 1 adapter slots (REG_MAX_LORAS)" in error
    reg = open_registry(sqlite_settings)
    assert {m.name: m.stages for m in reg.list_models()} == {other: {"staging": 1}, model: {}}
    (event,) = [e for e in reg.events(model=model) if e.kind == "reconcile.deploy_failed"]
    assert "adapter slots" in event.message
    # With a second slot the next pass deploys it, without training again.
    again = run_reg(sqlite_settings, "reconcile", str(ws / "recipes"), "--once", "--json",
                    REG_MAX_LORAS="2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert [(o["model"], o["action"], o["result"]) for o in json.loads(again.stdout)[
        "outcomes"]] == [(model, "deploy", "deployed")]
    assert reg.stage_map(model)["staging"].number == 1
