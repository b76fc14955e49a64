"""Desired state with its caches: a cached answer is never a stale one.

Every case computes the state twice with the same (warm) caches and compares
it with what a cold, cache-free computation says.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from recipes.identity import spec_identity
from rollout.gitops.desired import (
    DesiredState,
    desired_state,
    digest_cache,
    identity_cache,
    recipe_cache,
)
from rollout.gitops.gitinfo import GitLineage
from tests.support.factories import WorkspaceFactory

State = Callable[[Path], DesiredState]


@pytest.fixture
def state(tmp_path: Path) -> State:
    home = tmp_path / "home"
    caches = (digest_cache(home), recipe_cache(home), identity_cache(home))

    def compute(ws: Path) -> DesiredState:
        return desired_state([ws / "recipes"], caches[0], GitLineage(), caches[1], caches[2])

    return compute


def hashes(s: DesiredState) -> dict[str, str]:
    return {d.name: d.spec_hash for d in s.desired}


def cold(ws: Path) -> dict[str, str]:
    return hashes(desired_state([ws / "recipes"], None))


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


def test_resolver_reads_the_same_files_as_the_loader(workspace: WorkspaceFactory) -> None:
    from recipes.loading.loader import load_recipe
    from rollout.gitops.cache import Resolver

    def every_kind_of_path(text: str) -> str:
        return text.replace(
            "    system_prompt:",
            "    replay:\n      path: ../data/support.jsonl\n      format: openai_chat\n"
            "      ratio: 0.1\n    system_prompt:", 1).replace(
            "    seed: 42\n",
            "    seed: 42\n    ewc:\n      reference: ../data/faq.jsonl\n", 1)

    ws = workspace(keep=("support-bot",), edit={"support-bot": every_kind_of_path})
    loaded = load_recipe(ws / "recipes" / "support-bot.yaml")
    assert loaded.recipe.spec.data.replay is not None and loaded.recipe.spec.training.ewc
    files = Resolver().files(loaded)
    assert files.data == loaded.data_paths() and len(files.data) == 4
    assert files.model_dir == loaded.base_model_path


def test_data_file_swapped_for_a_symlink_out_of_the_workspace_is_blocked(
    workspace: WorkspaceFactory, state: State, tmp_path: Path
) -> None:
    ws = workspace()
    state(ws)
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_bytes((ws / "data" / "faq.jsonl").read_bytes())
    (ws / "data" / "faq.jsonl").unlink()
    (ws / "data" / "faq.jsonl").symlink_to(outside)
    s = state(ws)
    (blocked,) = s.blocked
    assert blocked.name == "faq-bot"
    assert any("outside the workspace" in p.message for p in blocked.problems)


def test_listing_finds_the_files_the_loader_finds(tmp_path: Path) -> None:
    from recipes.loading.loader import iter_recipe_files
    from rollout.gitops.cache import list_recipe_files

    root = tmp_path / "recipes"
    for rel in ("b.yaml", "a.yml", "nested/deeper/c.yaml", ".hidden.yaml", ".git/d.yaml",
                "nested/.cache/e.yaml", "notes.txt", "dir.yaml/f.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "g.yaml").write_text("x")
    (root / "linked.yaml").symlink_to(root / "b.yaml")
    (root / "linked-dir").symlink_to(outside)  # rglob does not enter symlinked folders
    (root / "dangling.yaml").symlink_to(tmp_path / "missing.yaml")
    single = root / "a.yml"

    listed = list_recipe_files([root, single])
    assert listed is not None
    assert [p for p, _ in listed] == list(iter_recipe_files([root, single]))
    assert [p.name for p, link in listed if link] == ["linked.yaml"]
    assert list_recipe_files([root / "nope.yaml"]) is None


def test_a_cache_hit_validates_the_recipe_only_when_asked(
    workspace: WorkspaceFactory, state: State
) -> None:
    from recipes.loading.loader import load_recipe
    from rollout.gitops.cache import CachedRecipe

    ws = workspace()
    state(ws)
    loaded = state(ws).loaded["support-bot"]
    assert isinstance(loaded, CachedRecipe)
    assert loaded.__dict__["_recipe"] is None  # planning did not need the pydantic model
    fresh = load_recipe(ws / "recipes" / "support-bot.yaml")
    assert (loaded.name, loaded.data_refs(), loaded.base_model_ref, loaded.promote_to) == (
        fresh.name, fresh.data_refs(), fresh.base_model_ref, fresh.promote_to)
    assert loaded.recipe == fresh.recipe
    assert loaded.data_paths() == fresh.data_paths()


def test_a_damaged_cache_entry_falls_back_to_the_recipe_text(
    workspace: WorkspaceFactory, state: State, tmp_path: Path
) -> None:
    import sqlite3

    from recipes.loading.loader import load_recipe

    ws = workspace()
    state(ws)
    db = sqlite3.connect(tmp_path / "home" / "cache" / "recipes.sqlite")
    damaged = 0
    with db:
        for key, value in db.execute("SELECT key, json FROM recipes").fetchall():
            bad = re.sub(r'"max_steps":\d+', '"max_steps":"many"', value)
            damaged += bad != value
            db.execute("UPDATE recipes SET json=? WHERE key=?", (bad, key))
    db.close()
    assert damaged == 3  # every example recipe sets max_steps
    home = tmp_path / "home"
    again = desired_state([ws / "recipes"], digest_cache(home), GitLineage(),
                          recipe_cache(home), identity_cache(home))
    for name in ("support-bot", "faq-bot", "polite-dpo"):
        fresh = load_recipe(ws / "recipes" / f"{name}.yaml")
        assert again.loaded[name].recipe == fresh.recipe


def test_a_data_file_turned_into_a_folder_blocks_its_recipe(
    workspace: WorkspaceFactory, state: State
) -> None:
    ws = workspace()
    state(ws)
    data = ws / "data" / "faq-billing.jsonl"
    data.unlink()
    data.mkdir()
    s = state(ws)
    (blocked,) = s.blocked
    assert blocked.name == "faq-bot"
    assert any("data file not found" in p.message for p in blocked.problems)
