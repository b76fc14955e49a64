"""Caches that make a no-op reconcile of 1,000 recipes fast.

Two costs dominate a pass in which nothing changed: parsing YAML with
position tracking (ruamel's round-trip loader, ~5 ms per recipe) and one
SQLite query per file digest. Both are cached here, keyed so a stale entry
can never be used:

- :class:`RecipeCache` maps (recipe path, workspace, allowed roots, xxh3 of
  the file's text) to the validated recipe as JSON. A hit re-validates that
  JSON with pydantic (strict, ~0.1 ms) and re-checks that the files the recipe
  names still exist; any doubt falls back to the full validator
  (:func:`recipes.loader.validate_document`), which is also what produces
  every problem message. Nothing invalid is ever cached.
- :class:`MemoDigestCache` is a :class:`~recipes.spec_hash.DigestCache` that
  reads the whole digest table once per pass into memory (the key still
  includes size, mtime and inode, so an edited file misses).
- :class:`IdentityCache` maps everything :func:`recipes.spec_hash.spec_identity`
  reads (the recipe's text and location, the (size, mtime, inode) of each data
  file and of each base-model file, the training-format version) to the
  identity it returned. The base model folder is listed once per pass, not
  once per recipe. The stat key is the same trust DigestCache already places
  in file metadata.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash
from pydantic import ValidationError

from recipes.errors import Problem
from recipes.loader import (
    ALLOWED_ROOTS_ENV,
    LoadedRecipe,
    LoadResult,
    check_recipes,
    find_workspace,
    iter_recipe_files,
    resolve_inside,
    validate_document,
)
from recipes.schema import Recipe

# The suffixes model_identity reads: imported, not copied, so the fingerprint
# always covers exactly the files the spec hash covers.
from recipes.spec_hash import (
    _MODEL_FILE_SUFFIXES,
    TRAINING_FORMAT_VERSION,
    DigestCache,
    SpecIdentity,
    spec_identity,
)

# Bump when the recipe schema's meaning changes in a way old JSON would hide.
_RECIPE_CACHE_VERSION = "1"


class _KeyValueFile:
    """A string -> string table in a small SQLite file, read whole once, written through.

    SQLite rather than a JSON file: several reconcilers and `reg plan` may
    write at once, and it gives atomic upserts without our own locking.
    """

    table = "kv"

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._mem: dict[str, str] | None = None

    def _db(self) -> sqlite3.Connection | None:
        if self._path is None:
            return None
        if self._conn is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, json TEXT)")
            self._conn = conn
        return self._conn

    def _all(self) -> dict[str, str]:
        if self._mem is None:
            db = self._db()
            self._mem = (dict(db.execute(f"SELECT key, json FROM {self.table}").fetchall())
                         if db else {})
        return self._mem

    def get(self, key: str) -> str | None:
        return self._all().get(key)

    def put_many(self, items: dict[str, str]) -> None:
        if not items:
            return
        self._all().update(items)
        db = self._db()
        if db is not None:
            with db:
                db.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?)",
                               items.items())

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RecipeCache(_KeyValueFile):
    """Validated recipe JSON by content key."""

    table = "recipes"


class IdentityCache(_KeyValueFile):
    """Spec identities by the metadata of everything they were computed from."""

    table = "identities"

    def __init__(self, path: Path | None) -> None:
        super().__init__(path)
        self._model_dirs: dict[Path, list[Any]] = {}
        self._pending: dict[str, str] = {}

    def new_pass(self) -> None:
        """Forget the model folder listings: files may have changed since the last pass."""
        self._model_dirs = {}

    def _model_fingerprint(self, model_dir: Path) -> list[Any]:
        """(name, size, mtime, inode) of the files model_identity reads; once per pass."""
        fp = self._model_dirs.get(model_dir)
        if fp is None:
            fp = []
            for f in sorted(model_dir.rglob("*")):
                if f.suffix in _MODEL_FILE_SUFFIXES and f.is_file():
                    st = f.stat()
                    fp.append([f.relative_to(model_dir).as_posix(), st.st_size,
                               st.st_mtime_ns, st.st_ino])
            self._model_dirs[model_dir] = fp
        return fp

    def identity(self, loaded: LoadedRecipe, digests: DigestCache | None,
                 files: RecipeFiles | None = None) -> SpecIdentity:
        files = files or recipe_files(loaded)
        data = []
        for p in files.data:
            st = p.stat()
            data.append([str(p), st.st_size, st.st_mtime_ns, st.st_ino])
        model_dir = files.model_dir
        parts = [TRAINING_FORMAT_VERSION, _key(loaded.path, loaded.workspace, loaded.text),
                 data, str(model_dir), self._model_fingerprint(model_dir)]
        key = xxhash.xxh3_128(json.dumps(parts).encode()).hexdigest()
        hit = self.get(key)
        if hit is not None:
            d = json.loads(hit)
            return SpecIdentity(d["spec_hash"], d["normalized_spec"], d["data_digests"],
                                d["base_model"])
        ident = spec_identity(loaded, digests)
        self._pending[key] = json.dumps(ident.as_json())
        return ident

    def flush(self) -> None:
        """Write the identities computed since the last flush (one transaction)."""
        self.put_many(self._pending)
        self._pending = {}


def _key(path: Path, workspace: Path, text: str) -> str:
    h = xxhash.xxh3_128(text.encode("utf-8")).hexdigest()
    roots = os.environ.get(ALLOWED_ROOTS_ENV, "")
    return f"{_RECIPE_CACHE_VERSION}\0{path}\0{workspace}\0{roots}\0{h}"


@dataclass(frozen=True)
class RecipeFiles:
    """The resolved files a recipe reads: resolved once per pass (each resolve is an lstat
    per path component, the slowest part of a no-op pass)."""

    data: list[Path]
    model_dir: Path


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

    def __call__(self, loaded: LoadedRecipe, rel: str) -> Path:
        key = (loaded.path.parent, rel, loaded.workspace)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._resolve(loaded, rel)
        return hit

    def _resolve(self, loaded: LoadedRecipe, rel: str) -> Path:
        # 1,000 data files in one folder: resolve (and check against the workspace)
        # the folder once, then each file that is not a symlink is folder / name.
        # Anything unusual goes through the loader's own check, unchanged.
        head, name = os.path.split(rel)
        base = loaded.path.parent
        if name in ("", ".", "..") or (base / rel).is_symlink():
            return loaded.resolve(rel)
        dkey = (base, head, loaded.workspace)
        folder = self._dirs.get(dkey)
        if folder is None:
            folder = self._dirs[dkey] = resolve_inside(base, head or ".", loaded.workspace)
        return folder / name

    def files(self, loaded: LoadedRecipe, *, verify: bool = False) -> RecipeFiles:
        data = [self(loaded, rel) for rel in loaded.data_refs()]
        if verify and data != loaded.data_paths():  # the folder shortcut and the loader disagree
            data = loaded.data_paths()
        return RecipeFiles(data, self(loaded, loaded.recipe.spec.base_model.path))


def recipe_files(loaded: LoadedRecipe) -> RecipeFiles:
    return RecipeFiles(loaded.data_paths(), loaded.base_model_path)


def _files_still_there(files: RecipeFiles) -> bool:
    """The cheap half of the loader's path checks; a False sends the file to the validator."""
    model = files.model_dir
    return (all(p.is_file() for p in files.data) and (model / "config.json").is_file()
            and any(model.glob("*.safetensors")))


def check_recipes_cached(
    paths: Iterable[Path], cache: RecipeCache, resolved: dict[Path, RecipeFiles] | None = None
) -> LoadResult:
    """:func:`recipes.loader.check_recipes`, with validated recipes served from ``cache``.

    ``resolved`` (optional) is filled with each valid recipe's files, by recipe path.
    """
    paths = list(paths)
    recipe_paths = list(iter_recipe_files(paths))
    if not recipe_paths or any(not f.is_file() for f in recipe_paths):
        return check_recipes(paths)  # the validator words "no recipes" / "no such file"
    result = LoadResult()
    seen: dict[str, LoadedRecipe] = {}
    fresh: dict[str, str] = {}
    resolver = Resolver()
    workspaces: dict[Path, Path] = {}
    folders: dict[Path, Path] = {}
    for f in recipe_paths:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            result.problems.update(check_recipes([f]).problems)
            continue
        # A recipe that is not a symlink resolves to its resolved folder + its name:
        # one lstat instead of one per path component.
        parent = folders.get(f.parent)
        if parent is None:
            parent = folders[f.parent] = f.parent.resolve()
        rpath = f.resolve() if f.is_symlink() else parent / f.name
        ws = workspaces.get(rpath.parent)
        if ws is None:
            ws = workspaces[rpath.parent] = find_workspace(rpath).resolve()
        key = _key(rpath, ws, text)
        loaded: LoadedRecipe | None = None
        files: RecipeFiles | None = None
        cached = cache.get(key)
        if cached is not None:
            try:
                candidate = LoadedRecipe(Recipe.model_validate_json(cached), rpath, text, ws)
            except ValidationError:
                candidate = None
            if candidate is not None:
                try:
                    files = resolver.files(candidate)
                except ValueError:  # a path now escapes the workspace: let the validator say so
                    files = None
                if files is not None and _files_still_there(files):
                    loaded = candidate
        if loaded is None:
            loaded, problems = validate_document(f, text)
            if problems or loaded is None:
                result.problems.setdefault(str(f), []).extend(problems)
                continue
            fresh[key] = loaded.recipe.model_dump_json()
            files = resolver.files(loaded, verify=True)
        if resolved is not None and files is not None:
            resolved[loaded.path] = files
        first = seen.get(loaded.name)
        if first is not None:
            # Rare: let the validator word it, with the line of metadata.name.
            dup = check_recipes([first.path, f]).problems.get(str(f))
            result.problems.setdefault(str(f), []).extend(dup or [Problem(
                str(f), None, None, "metadata.name",
                f"model name '{loaded.name}' is already used by {first.path}")])
            continue
        seen[loaded.name] = loaded
        result.recipes.append(loaded)
    cache.put_many(fresh)
    return result


class MemoDigestCache(DigestCache):
    """A DigestCache that loads every row once and answers from memory afterwards."""

    def __init__(self, path: Path | None) -> None:
        super().__init__(path)
        self._rows: dict[str, tuple[int, int, int, str]] | None = None

    def _load(self) -> dict[str, tuple[int, int, int, str]]:
        if self._rows is None:
            rows: dict[str, tuple[int, int, int, str]] = {}
            if self._path is not None and self._path.exists():
                conn = sqlite3.connect(self._path, timeout=30)
                try:
                    for path, size, mtime, ino, digest in conn.execute(
                        "SELECT path, size, mtime_ns, inode, digest FROM digests"
                    ):
                        rows[path] = (size, mtime, ino, digest)
                except sqlite3.OperationalError:  # no table yet
                    pass
                finally:
                    conn.close()
            self._rows = rows
        return self._rows

    def get(self, path: Path, st: os.stat_result) -> str | None:
        row = self._load().get(str(path))
        if row is not None and row[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
            return row[3]
        return None

    def put(self, path: Path, st: os.stat_result, digest: str) -> None:
        super().put(path, st, digest)
        self._load()[str(path)] = (st.st_size, st.st_mtime_ns, st.st_ino, digest)
