"""Desired state with the loader's cache: a cached answer is never a stale one.

Every case computes the state twice with the same (warm) cache and compares
it with what a cold, cache-free computation says. The cache itself is tested
in tests/recipes/loading/test_cache.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from recipes.identity import spec_identity
from recipes.loading.cache import LoadCache
from rollout.gitops.desired import DesiredState, desired_state
from rollout.gitops.gitinfo import GitLineage
from tests.support.factories import WorkspaceFactory

State = Callable[[Path], DesiredState]


@pytest.fixture
def state(tmp_path: Path) -> State:
    cache = LoadCache.under(tmp_path / "home" / "cache")

    def compute(ws: Path) -> DesiredState:
        return desired_state([ws / "recipes"], GitLineage(), cache)

    return compute


def hashes(s: DesiredState) -> dict[str, str]:
    return {d.name: d.spec_hash for d in s.desired}


def cold(ws: Path) -> dict[str, str]:
    return hashes(desired_state([ws / "recipes"]))


def test_warm_caches_agree_with_a_cold_computation(
    workspace: WorkspaceFactory, state: State
) -> None:
    ws = workspace()
    first, second = state(ws), state(ws)
    assert hashes(first) == hashes(second) == cold(ws)
    assert set(hashes(first)) == {"support-bot", "faq-bot", "polite-dpo"}
    loaded = second.loaded["faq-bot"]
    assert second.identities["faq-bot"] == spec_identity(loaded)
    assert all(d.git is not None and d.git.dirty is False for d in second.desired)


def test_one_data_byte_changes_only_that_models_hash(
    workspace: WorkspaceFactory, state: State
) -> None:
    ws = workspace()
    before = hashes(state(ws))
    data = ws / "data" / "faq.jsonl"
    raw = bytearray(data.read_bytes())
    i = raw.index(b"bravo")
    raw[i] = ord("B")  # same size: only the content (and mtime) differ
    data.write_bytes(bytes(raw))
    after = state(ws)
    assert hashes(after)["faq-bot"] != before["faq-bot"]
    assert hashes(after)["support-bot"] == before["support-bot"]
    assert hashes(after) == cold(ws)
    faq = next(d for d in after.desired if d.name == "faq-bot")
    assert faq.git is not None and faq.git.dirty is True


@pytest.mark.parametrize(
    "edit",
    [pytest.param(lambda t: t.replace("# faq-bot:", "# an edited comment\n# faq-bot:"),
                  id="comment"),
     pytest.param(lambda t: t.replace("    r: 8\n    alpha: 16\n", "    alpha: 16\n    r: 8\n"),
                  id="key-order"),
     pytest.param(lambda t: t.replace("    batch_size: 8\n", "    batch_size: 8\n"
                                      "    warmup_ratio: 0.0\n"), id="default-written-out")],
)
def test_cosmetic_recipe_edits_keep_the_hash(
    workspace: WorkspaceFactory, state: State, edit: Callable[[str], str]
) -> None:
    ws = workspace()
    before = hashes(state(ws))
    f = ws / "recipes" / "faq-bot.yaml"
    text = f.read_text()
    assert edit(text) != text
    f.write_text(edit(text))
    assert hashes(state(ws)) == before


def test_meaningful_recipe_edit_is_revalidated(
    workspace: WorkspaceFactory, state: State
) -> None:
    ws = workspace()
    before = hashes(state(ws))
    f = ws / "recipes" / "faq-bot.yaml"
    f.write_text(f.read_text().replace("max_steps: 50", "max_steps: 51"))
    after = state(ws)
    assert hashes(after)["faq-bot"] != before["faq-bot"]
    f.write_text(f.read_text().replace("max_steps: 51", "max_steps: 0"))
    broken = state(ws)
    assert [b.name for b in broken.blocked] == ["faq-bot"]
    assert "training.max_steps" in broken.blocked[0].problems[0].rendered


def test_a_data_file_removed_after_caching_blocks_its_recipe(
    workspace: WorkspaceFactory, state: State
) -> None:
    ws = workspace()
    state(ws)
    os.remove(ws / "data" / "faq-billing.jsonl")
    s = state(ws)
    assert "faq-bot" not in hashes(s)
    (blocked,) = s.blocked
    assert blocked.name == "faq-bot"
    assert any("data file not found" in p.message for p in blocked.problems)


def test_duplicate_model_names_are_reported_with_caches(
    workspace: WorkspaceFactory, state: State
) -> None:
    ws = workspace()
    state(ws)
    copy = ws / "recipes" / "zz-copy.yaml"
    copy.write_text((ws / "recipes" / "faq-bot.yaml").read_text())
    s = state(ws)
    (blocked,) = s.blocked
    assert blocked.file == str(copy)
    assert "already used by" in blocked.problems[0].message


def test_unreadable_yaml_blocks_with_unknown_name(workspace: WorkspaceFactory,
                                                  state: State) -> None:
    ws = workspace()
    (ws / "recipes" / "broken.yaml").write_text("metadata: [unclosed\n")
    s = state(ws)
    (blocked,) = s.blocked
    assert blocked.name is None and "YAML" in blocked.problems[0].message
    assert len(s.desired) == 3
