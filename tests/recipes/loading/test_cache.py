"""The loader's optional cache: a cached answer is never a stale one, nor a different one.

Every case loads the same workspace with a warm cache and compares what it
says with what the loader says without one.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from recipes.identity import spec_identity
from recipes.loading.cache import CachedRecipe, LoadCache, fingerprint_sources
from recipes.loading.files import RecipeFiles, Resolver, list_recipe_files
from recipes.loading.loader import LoadResult, check_recipes, load_recipe
from tests.support.factories import RecipeFactory
from tests.support.paths import REPO

Load = Callable[[Path], LoadResult]


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def cached(cache_dir: Path) -> Load:
    """``cached(folder)``: check_recipes with a cache that persists across calls (as passes)."""

    def load(folder: Path) -> LoadResult:
        cache = LoadCache.under(cache_dir)
        try:
            return check_recipes([folder], cache=cache.recipes)
        finally:
            cache.close()

    return load


def said(result: LoadResult) -> tuple[list[str], dict[str, list[str]]]:
    """What a load says: the models, and every problem rendered, by file."""
    return (sorted(r.name for r in result.recipes),
            {f: [p.render() for p in ps] for f, ps in sorted(result.problems.items())})


def test_a_warm_cache_serves_cached_recipes_that_say_what_the_loader_says(
    workspace: Path, cached: Load
) -> None:
    recipes = workspace / "recipes"
    first, second = cached(recipes), cached(recipes)
    assert not any(isinstance(r, CachedRecipe) for r in first.recipes)
    assert all(isinstance(r, CachedRecipe) for r in second.recipes)
    plain = check_recipes([recipes])
    assert said(first) == said(second) == said(plain)
    for hit in second.recipes:
        fresh = next(r for r in plain.recipes if r.name == hit.name)
        assert (hit.path, hit.workspace, hit.data_refs(), hit.base_model_ref,
                hit.promote_to) == (fresh.path, fresh.workspace, fresh.data_refs(),
                                    fresh.base_model_ref, fresh.promote_to)
        assert hit.recipe == fresh.recipe
        assert spec_identity(hit) == spec_identity(fresh)


@pytest.mark.parametrize("change", [
    pytest.param({"spec.training.max_steps": 0}, id="invalid-value"),
    pytest.param({"spec.training.max_stepz": 5}, id="unknown-key"),
    pytest.param({"spec.data.sources.0.path": "../data/nope.jsonl"}, id="missing-data"),
    pytest.param({"spec.base_model.path": "../data"}, id="not-a-model"),
    pytest.param({"spec.data.sources.0.path": "../../outside.jsonl"}, id="escapes"),
])
def test_an_edit_after_caching_is_validated_again(
    workspace: Path, cached: Load, write_recipe: RecipeFactory, change: dict[str, object]
) -> None:
    good = write_recipe("edited")
    cached(workspace / "recipes")
    write_recipe("edited", **change)
    again = cached(workspace / "recipes")
    assert "edited" not in said(again)[0]
    assert said(again) == said(check_recipes([workspace / "recipes"]))
    assert said(again)[1][str(good)]  # the loader's own words


def _turn_into_a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("damage", [
    pytest.param(Path.unlink, id="removed"),
    pytest.param(_turn_into_a_folder, id="turned-into-a-folder"),
])
def test_a_data_file_damaged_after_caching_blocks_its_recipe(
    workspace: Path, cached: Load, damage: Callable[[Path], None]
) -> None:
    cached(workspace / "recipes")
    damage(workspace / "data" / "faq-billing.jsonl")
    again = cached(workspace / "recipes")
    assert said(again)[0] == ["polite-dpo", "support-bot"]
    (problems,) = said(again)[1].values()
    assert any("data file not found" in p for p in problems)


def test_a_data_file_swapped_for_a_symlink_out_of_the_workspace_is_refused(
    workspace: Path, cached: Load, tmp_path: Path
) -> None:
    cached(workspace / "recipes")
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_bytes((workspace / "data" / "faq.jsonl").read_bytes())
    (workspace / "data" / "faq.jsonl").unlink()
    (workspace / "data" / "faq.jsonl").symlink_to(outside)
    again = cached(workspace / "recipes")
    assert "faq-bot" not in said(again)[0]
    assert any("outside the workspace" in p for ps in said(again)[1].values() for p in ps)


def test_duplicate_names_are_worded_alike_with_and_without_the_cache(
    workspace: Path, cached: Load
) -> None:
    cached(workspace / "recipes")
    copy = workspace / "recipes" / "zz-copy.yaml"
    copy.write_text((workspace / "recipes" / "faq-bot.yaml").read_text())
    again = cached(workspace / "recipes")
    assert said(again) == said(check_recipes([workspace / "recipes"]))
    (problem,) = said(again)[1][str(copy)]
    assert re.search(r"zz-copy\.yaml:\d+:\d+: metadata\.name: model name 'faq-bot' is already "
                     r"used by .*faq-bot\.yaml", problem)


def test_a_cache_hit_validates_the_recipe_only_when_asked(workspace: Path, cached: Load) -> None:
    cached(workspace / "recipes")
    hit = next(r for r in cached(workspace / "recipes").recipes if r.name == "support-bot")
    assert isinstance(hit, CachedRecipe)
    assert hit.__dict__["_recipe"] is None  # loading did not need the pydantic model
    assert hit.recipe == load_recipe(workspace / "recipes" / "support-bot.yaml").recipe


def test_a_damaged_cache_entry_falls_back_to_the_recipe_text(
    workspace: Path, cached: Load, cache_dir: Path
) -> None:
    cached(workspace / "recipes")
    db = sqlite3.connect(cache_dir / "recipes.sqlite")
    with db:
        rows = db.execute("SELECT key, json FROM recipes").fetchall()
        for key, value in rows:
            db.execute("UPDATE recipes SET json=? WHERE key=?",
                       (re.sub(r'"max_steps":\d+', '"max_steps":"many"', value), key))
    db.close()
    assert len(rows) == 3
    for hit in cached(workspace / "recipes").recipes:
        assert hit.recipe == load_recipe(hit.path).recipe


def test_identities_from_the_cache_equal_fresh_ones_and_miss_on_a_data_byte(
    workspace: Path, cache_dir: Path
) -> None:
    def identities() -> dict[str, str]:
        cache = LoadCache.under(cache_dir)
        resolved: dict[Path, RecipeFiles] = {}
        result = check_recipes([workspace / "recipes"], cache=cache.recipes, resolved=resolved)
        found = cache.identities_of(result.recipes, resolved)
        cache.close()
        return {name: i.spec_hash for name, i in found.items() if not isinstance(i, OSError)}

    def fresh() -> dict[str, str]:
        return {r.name: spec_identity(r).spec_hash for r in check_recipes(
            [workspace / "recipes"]).recipes}

    assert identities() == identities() == fresh()
    data = workspace / "data" / "faq.jsonl"
    raw = bytearray(data.read_bytes())
    raw[raw.index(b"bravo")] = ord("B")  # same size: only the content (and mtime) differ
    data.write_bytes(bytes(raw))
    after = identities()
    assert after == fresh()
    assert set(after) == {"faq-bot", "support-bot", "polite-dpo"}


def test_resolver_reads_the_same_files_as_the_loader(write_recipe: RecipeFactory) -> None:
    path = write_recipe("every-path", **{
        "spec.data.replay": {"path": "../data/support.jsonl", "format": "openai_chat",
                             "ratio": 0.1},
        "spec.training.ewc": {"reference": "../data/faq.jsonl"}})
    loaded = load_recipe(path)
    files = Resolver().files(loaded)
    assert files.data == loaded.data_paths() and len(files.data) == 4
    assert files.model_dir == loaded.base_model_path


def test_listing_skips_hidden_names_and_symlinked_folders(tmp_path: Path) -> None:
    root = tmp_path / "recipes"
    for rel in ("b.yaml", "a.yml", "nested/deeper/c.yaml", ".hidden.yaml", ".git/d.yaml",
                "nested/.cache/e.yaml", "notes.txt", "dir.yaml/f.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "g.yaml").write_text("x")
    (root / "linked.yaml").symlink_to(root / "b.yaml")
    (root / "linked-dir").symlink_to(outside)
    (root / "dangling.yaml").symlink_to(tmp_path / "missing.yaml")
    single = root / "a.yml"

    listed = list_recipe_files([root, single, root / "nope.yaml"])
    assert [p.relative_to(root).as_posix() for p, _ in listed] == [
        "a.yml", "b.yaml", "dir.yaml/f.yaml", "linked.yaml", "nested/deeper/c.yaml",
        "a.yml", "nope.yaml"]
    assert [p.name for p, link in listed if link] == ["linked.yaml"]


def test_the_fingerprint_covers_every_module_that_validates_or_identifies_a_recipe(
    workspace: Path,
) -> None:
    """Edit any module that decides what a recipe means and the cache must miss: so every
    project module that validating and identifying a recipe imports is fingerprinted."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from recipes.identity import spec_identity\n"
        "from recipes.loading.loader import load_recipe\n"
        f"spec_identity(load_recipe(Path({str(workspace / 'recipes' / 'faq-bot.yaml')!r})))\n"
        "for m in list(sys.modules.values()):\n"
        "    if m.__name__.startswith('recipes.') and getattr(m, '__file__', None):\n"
        "        print(m.__file__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=120).stdout.split()
    used = {Path(f).resolve() for f in out if not f.endswith("__init__.py")}
    covered = {p.resolve() for p in fingerprint_sources()}
    assert used and used <= covered, sorted(str(p) for p in used - covered)
