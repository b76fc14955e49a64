"""Which files recipes are, and which files a recipe reads, resolved cheaply for 1,000 recipes.

- :func:`list_recipe_files`: the recipe files under the paths a command names;
- :class:`Resolver`: :meth:`LoadedRecipe.resolve` memoised for one load, with
  the same checks (a path that escapes the workspace raises every time).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from recipes.loading.recipe import (
    RECIPE_SUFFIXES,
    LoadedRecipe,
    model_folder_problem,
    resolve_inside,
)


@dataclass(frozen=True)
class RecipeFiles:
    """The resolved files a recipe reads: resolved once per pass (each resolve is an lstat
    per path component, the slowest part of a no-op pass).

    ``stats`` (of ``data``, when the pass already took them) and ``key`` (the
    recipe's cache key) spare the identity cache a second stat and hash.
    """

    data: list[Path]
    model_dir: Path
    stats: list[os.stat_result] | None = None
    key: str | None = None


class Resolver:
    """``LoadedRecipe.resolve`` memoised for one pass.

    1,000 recipes share one base model and often one general data set; each
    resolve costs an lstat per path component. The memo lives for one pass
    only (a symlink may change between passes) and holds only successes, so
    a path that escapes the workspace raises every time.
    """

    def __init__(self) -> None:
        self._memo: dict[tuple[Path, str, Path], Path] = {}
        self._dirs: dict[tuple[Path, str, Path], Path] = {}
        self._files: dict[tuple[Path, str, Path], tuple[Path, os.stat_result] | None] = {}
        self._models: dict[Path, bool] = {}

    def __call__(self, loaded: LoadedRecipe, rel: str, base: Path | None = None) -> Path:
        """``loaded.resolve(rel)``; ``base``, the recipe's folder, if the caller has it."""
        base = base or loaded.path.parent
        key = (base, rel, loaded.workspace)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._resolve(loaded, base, rel)
        return hit

    def _folder(self, loaded: LoadedRecipe, base: Path, head: str) -> Path:
        dkey = (base, head, loaded.workspace)
        folder = self._dirs.get(dkey)
        if folder is None:
            folder = self._dirs[dkey] = resolve_inside(base, head or ".", loaded.workspace)
        return folder

    def _resolve(self, loaded: LoadedRecipe, base: Path, rel: str) -> Path:
        # 1,000 data files in one folder: resolve (and check against the workspace)
        # the folder once, then each file that is not a symlink is folder / name.
        # Anything unusual goes through the loader's own check, unchanged.
        head, name = os.path.split(rel)
        if name in ("", ".", "..") or (base / rel).is_symlink():
            return loaded.resolve(rel)
        return self._folder(loaded, base, head) / name

    def _data_file(self, loaded: LoadedRecipe, base: Path,
                   rel: str) -> tuple[Path, os.stat_result] | None:
        """A data file's resolved path and stat from one ``lstat``; None unless a regular file.

        The same rules as :meth:`_resolve`: a symlink, or a name the folder
        shortcut does not cover, is resolved (and checked) by the loader.
        """
        key = (base, rel, loaded.workspace)
        if key in self._files:
            return self._files[key]
        head, name = os.path.split(rel)
        found: tuple[Path, os.stat_result] | None = None
        try:
            st = None if name in ("", ".", "..") else os.lstat(os.path.join(base, rel))
            if st is None or stat.S_ISLNK(st.st_mode):
                path = loaded.resolve(rel)
                st = os.stat(path)
            else:
                path = self._folder(loaded, base, head) / name
            if stat.S_ISREG(st.st_mode):
                found = (path, st)
        except OSError:  # missing, or a path through a file: the validator says which
            found = None
        self._files[key] = found
        return found

    def _model_ok(self, model_dir: Path) -> bool:
        """The validator's model-folder check, once per folder."""
        ok = self._models.get(model_dir)
        if ok is None:
            ok = self._models[model_dir] = model_folder_problem(model_dir) is None
        return ok

    def files(self, loaded: LoadedRecipe, *, verify: bool = False) -> RecipeFiles:
        base = loaded.path.parent
        data = [self(loaded, rel, base) for rel in loaded.data_refs()]
        if verify and data != loaded.data_paths():  # the folder shortcut and the loader disagree
            data = loaded.data_paths()
        return RecipeFiles(data, self(loaded, loaded.base_model_ref, base))

    def checked_files(self, loaded: LoadedRecipe, key: str) -> RecipeFiles | None:
        """A cached recipe's files with their stats, or None when one is missing or is not
        what the recipe says (then the validator runs and says which).

        Raises ValueError when a path now escapes the workspace.
        """
        base = loaded.path.parent
        data: list[Path] = []
        stats: list[os.stat_result] = []
        for rel in loaded.data_refs():
            found = self._data_file(loaded, base, rel)
            if found is None:
                return None
            data.append(found[0])
            stats.append(found[1])
        model_dir = self(loaded, loaded.base_model_ref, base)
        if not self._model_ok(model_dir):
            return None
        return RecipeFiles(data, model_dir, stats, key)


def recipe_files(loaded: LoadedRecipe) -> RecipeFiles:
    return RecipeFiles(loaded.data_paths(), loaded.base_model_path)


def _walk(folder: Path) -> Iterator[tuple[Path, bool]]:
    """Recipe files below ``folder`` as (path, is a symlink), in no particular order.

    One ``scandir`` per folder and no stat per file: hidden names are skipped,
    no symlinked folder is entered, and what is a file after following
    symlinks is kept.
    """
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except PermissionError:  # a folder we may not list holds no recipe of ours
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir(follow_symlinks=False):
            yield from _walk(folder / e.name)
        elif e.name.endswith(RECIPE_SUFFIXES) and e.is_file():
            yield folder / e.name, e.is_symlink()


def list_recipe_files(paths: Iterable[Path]) -> list[tuple[Path, bool]]:
    """The recipe files to load, each with whether it is a symlink.

    Files named directly (whether or not they exist: the loader words a
    missing one), then every ``*.yaml`` / ``*.yml`` below each named folder,
    sorted, skipping hidden names and not entering symlinked folders.
    """
    out: list[tuple[Path, bool]] = []
    for p in paths:
        if p.is_dir():
            out += sorted(_walk(p))
        else:
            out.append((p, p.is_symlink()))
    return out
