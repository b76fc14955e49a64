"""Caches that make a no-op reconcile of 1,000 recipes fast.

Two costs dominate a pass in which nothing changed: parsing YAML with
position tracking (ruamel's round-trip loader, ~5 ms per recipe) and one
SQLite query per file digest. Both are cached here, keyed so a stale entry
can never be used:

- :class:`RecipeCache` maps (recipe path, workspace, allowed roots, xxh3 of
  the file's text, fingerprint of the validating code) to what the pass needs
  of the validated recipe (name, data files, base model, deploy stage) and the
  recipe as JSON. A hit builds no pydantic model: the :class:`CachedRecipe`
  validates that JSON only when something asks for the full recipe (training).
  The files it names are still checked on every pass (one ``lstat`` each); any
  doubt falls back to the full validator (:func:`recipes.loading.loader.validate_document`),
  which is also what produces every problem message. Nothing invalid is ever
  cached.
- :class:`MemoDigestCache` is a :class:`~recipes.identity.DigestCache` that
  reads the whole digest table once per pass into memory (the key still
  includes size, mtime and inode, so an edited file misses).
- :class:`IdentityCache` maps everything :func:`recipes.identity.spec_identity`
  reads (the recipe's key above, the (size, mtime, inode) of each data file and
  of each base-model file, the training-format version) to the identity it
  returned. The base model folder is listed once per pass, not once per
  recipe. The stat key is the same trust DigestCache already places in file
  metadata.

The code fingerprint (xxh3 of the schema, loader and spec-hash sources and the
pydantic version) makes both caches miss after any change to how recipes are
validated, normalised or hashed, without anyone remembering to bump a version.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from recipes.core.errors import Problem, ValidationFailed

# The suffixes model_identity reads: imported, not copied, so the fingerprint
# always covers exactly the files the spec hash covers.
from recipes.identity import (
    _MODEL_FILE_SUFFIXES,
    TRAINING_FORMAT_VERSION,
    DigestCache,
    SpecIdentity,
    spec_identity,
)
from recipes.loading import loader as _loader
from recipes.loading.loader import (
    ALLOWED_ROOTS_ENV,
    RECIPE_SUFFIXES,
    LoadedRecipe,
    LoadResult,
    check_recipes,
    find_workspace,
    resolve_inside,
    validate_document,
)

if TYPE_CHECKING:
    from recipes.schema import Recipe

# Bump when the meaning of a cached entry changes in a way the code fingerprint misses.
_RECIPE_CACHE_VERSION = "3"
_BATCH = 500  # keys per SELECT ... IN (SQLite allows 999 variables before 3.32)


@functools.cache
def code_fingerprint() -> str:
    """xxh3 of the code that decides what a recipe means and how it is cached (read once per
    process, ~0.1 ms)."""
    import pydantic

    h = xxhash.xxh3_128(pydantic.VERSION.encode())
    recipes_dir = Path(_loader.__file__).parent
    for source in (recipes_dir / "schema.py", recipes_dir / "loader.py",
                   recipes_dir / "spec_hash.py", Path(__file__)):
        try:
            h.update(source.read_bytes())
        except OSError:  # e.g. run from a zip: the version above still guards the cache
            h.update(source.name.encode())
    return h.hexdigest()


class _KeyValueFile:
    """A string -> string table in a small SQLite file, read whole once, written through.

    SQLite rather than a JSON file: several reconcilers and `reg plan` may
    write at once, and it gives atomic upserts without our own locking.
    """

    table = "kv"

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        # Entries are immutable per key, so what was read once stays true (--watch).
        self._mem: dict[str, str] = {}

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

    def prefetch(self, keys: Iterable[str]) -> None:
        """Read the entries of ``keys`` in a few queries (1,000 single lookups cost 5x more).

        Only the keys a pass asks for: entries of old recipe versions stay on disk
        and cost nothing.
        """
        missing = [k for k in dict.fromkeys(keys) if k not in self._mem]
        db = self._db() if missing else None
        if db is None:
            return
        for i in range(0, len(missing), _BATCH):
            chunk = missing[i:i + _BATCH]
            marks = ",".join("?" * len(chunk))
            self._mem.update(db.execute(
                f"SELECT key, json FROM {self.table} WHERE key IN ({marks})", chunk).fetchall())

    def get(self, key: str) -> str | None:
        hit = self._mem.get(key)
        if hit is None:
            self.prefetch([key])
            hit = self._mem.get(key)
        return hit

    def put_many(self, items: dict[str, str]) -> None:
        if not items:
            return
        self._mem.update(items)
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
    """Validated recipes by content key: see :class:`CachedRecipe` for the entry."""

    table = "recipes"


class IdentityCache(_KeyValueFile):
    """Spec identities by the metadata of everything they were computed from.

    An entry is the identity's JSON without its normalised spec, a newline,
    then the normalised spec's JSON, which is decoded only if a diff reads it.
    """

    table = "identities"

    def __init__(self, path: Path | None) -> None:
        super().__init__(path)
        self._model_dirs: dict[Path, str] = {}
        self._pending: dict[str, str] = {}

    def new_pass(self) -> None:
        """Forget the model folder listings: files may have changed since the last pass."""
        self._model_dirs = {}

    def _model_fingerprint(self, model_dir: Path) -> str:
        """(name, size, mtime, inode) of the files model_identity reads, as JSON; once per pass."""
        fp = self._model_dirs.get(model_dir)
        if fp is None:
            rows = []
            for f in sorted(model_dir.rglob("*")):
                if f.suffix in _MODEL_FILE_SUFFIXES and f.is_file():
                    st = f.stat()
                    rows.append([f.relative_to(model_dir).as_posix(), st.st_size,
                                 st.st_mtime_ns, st.st_ino])
            fp = self._model_dirs[model_dir] = json.dumps([str(model_dir), rows])
        return fp

    def key(self, loaded: LoadedRecipe, files: RecipeFiles | None = None) -> str:
        """The entry's key; raises OSError when a data file cannot be stat'ed."""
        files = files or recipe_files(loaded)
        stats = files.stats if files.stats is not None else [p.stat() for p in files.data]
        data = [[str(p), st.st_size, st.st_mtime_ns, st.st_ino]
                for p, st in zip(files.data, stats, strict=True)]
        recipe_key = files.key or _key(loaded.path, loaded.workspace, loaded.text)
        source = "\0".join((str(TRAINING_FORMAT_VERSION), recipe_key, json.dumps(data),
                            self._model_fingerprint(files.model_dir)))
        return xxhash.xxh3_128(source.encode()).hexdigest()

    def identity(self, loaded: LoadedRecipe, digests: DigestCache | None,
                 files: RecipeFiles | None = None, key: str | None = None) -> SpecIdentity:
        key = key or self.key(loaded, files)
        hit = self.get(key)
        if hit is not None:
            head, _, spec = hit.partition("\n")
            d = json.loads(head)
            return SpecIdentity(d["spec_hash"], JsonMapping(spec), d["data_digests"],
                                d["base_model"])
        ident = spec_identity(loaded, digests)
        head = json.dumps({"spec_hash": ident.spec_hash, "data_digests": ident.data_digests,
                           "base_model": ident.base_model})
        self._pending[key] = f"{head}\n{json.dumps(dict(ident.normalized_spec))}"
        return ident

    def flush(self) -> None:
        """Write the identities computed since the last flush (one transaction)."""
        self.put_many(self._pending)
        self._pending = {}


class JsonMapping(Mapping[str, Any]):
    """A JSON object decoded on first use: a pass in which nothing changed never reads the
    normalised specs (only `reg plan`'s diff of a changed model does)."""

    __slots__ = ("_text", "_value")

    def __init__(self, text: str) -> None:
        self._text = text
        self._value: dict[str, Any] | None = None

    def _decoded(self) -> dict[str, Any]:
        if self._value is None:
            value = json.loads(self._text)
            if not isinstance(value, dict):
                raise ValueError(f"not a JSON object: {self._text[:60]!r}")
            self._value = value
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())


def _key(path: Path, workspace: Path, text: str) -> str:
    h = xxhash.xxh3_128(text.encode("utf-8")).hexdigest()
    roots = os.environ.get(ALLOWED_ROOTS_ENV, "")
    return (f"{_RECIPE_CACHE_VERSION}\0{code_fingerprint()}\0{path}\0{workspace}\0{roots}"
            f"\0{h}")


class CachedRecipe(LoadedRecipe):
    """A valid recipe served from :class:`RecipeCache` without building its pydantic model.

    A pass needs only the name, the files and the deploy stage, which were
    taken from the validated recipe when it was cached; validating the cached
    JSON costs ~0.1 ms a recipe, so it waits until something asks for
    :attr:`recipe` (training one model, not planning 1,000). The entry is
    those facts as JSON, a newline, then the recipe's JSON.
    """

    _facts: dict[str, Any]
    _json: str
    _recipe: Recipe | None

    def __init__(self, path: Path, text: str, workspace: Path, entry: str) -> None:
        facts, _, recipe_json = entry.partition("\n")
        # The dataclass is frozen: set the fields the way its own __init__ would.
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "workspace", workspace)
        object.__setattr__(self, "_facts", json.loads(facts))
        object.__setattr__(self, "_json", recipe_json)
        object.__setattr__(self, "_recipe", None)

    @staticmethod
    def entry_for(loaded: LoadedRecipe) -> str:
        """The cache entry of a recipe the validator has just accepted."""
        facts = json.dumps({"name": loaded.name, "data": loaded.data_refs(),
                            "base_model": loaded.base_model_ref,
                            "promote_to": loaded.promote_to})
        return f"{facts}\n{loaded.recipe.model_dump_json()}"

    @property
    def recipe(self) -> Recipe:
        cached = self._recipe
        if cached is None:
            cached = self._validate()
            object.__setattr__(self, "_recipe", cached)
        return cached

    def _validate(self) -> Recipe:
        from pydantic import ValidationError

        from recipes.schema import Recipe

        try:
            return Recipe.model_validate_json(self._json)
        except ValidationError:  # a damaged entry: the text itself is the authority
            loaded, problems = validate_document(self.path, self.text, self.workspace)
            if loaded is None:
                raise ValidationFailed(problems) from None
            return loaded.recipe

    @property
    def name(self) -> str:
        return str(self._facts["name"])

    @property
    def base_model_ref(self) -> str:
        return str(self._facts["base_model"])

    @property
    def promote_to(self) -> str | None:
        stage = self._facts["promote_to"]
        return None if stage is None else str(stage)

    def data_refs(self) -> list[str]:
        return [str(r) for r in self._facts["data"]]


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
        """The loader's model-folder check (config.json, *.safetensors), once per folder."""
        ok = self._models.get(model_dir)
        if ok is None:
            ok = self._models[model_dir] = ((model_dir / "config.json").is_file()
                                            and any(model_dir.glob("*.safetensors")))
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

    :func:`recipes.loading.loader.iter_recipe_files` without a stat per file: it
    skips hidden names, enters no symlinked folder (as ``rglob`` does) and
    keeps what is a file after following symlinks.
    """
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except PermissionError:  # rglob skips what it cannot list
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir(follow_symlinks=False):
            yield from _walk(folder / e.name)
        elif e.name.endswith(RECIPE_SUFFIXES) and e.is_file():
            yield folder / e.name, e.is_symlink()


def list_recipe_files(paths: Iterable[Path]) -> list[tuple[Path, bool]] | None:
    """The files :func:`recipes.loading.loader.iter_recipe_files` yields, in its order, each with
    whether it is a symlink; None when a named path is missing or names no recipe (the
    validator words that)."""
    out: list[tuple[Path, bool]] = []
    for p in paths:
        if p.is_dir():
            out += sorted(_walk(p))
        elif p.is_file():
            out.append((p, p.is_symlink()))
        else:
            return None
    return out or None


def check_recipes_cached(
    paths: Iterable[Path], cache: RecipeCache, resolved: dict[Path, RecipeFiles] | None = None
) -> LoadResult:
    """:func:`recipes.loading.loader.check_recipes`, with validated recipes served from ``cache``.

    ``resolved`` (optional) is filled with each valid recipe's files, by recipe path.
    """
    paths = list(paths)
    listed = list_recipe_files(paths)
    if listed is None:
        return check_recipes(paths)  # the validator words "no recipes" / "no such file"
    result = LoadResult()
    texts: list[tuple[Path, str, Path, Path, str]] = []  # file, text, resolved, workspace, key
    workspaces: dict[Path, Path] = {}
    folders: dict[Path, Path] = {}
    for f, is_link in listed:
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
        rpath = f.resolve() if is_link else parent / f.name
        ws = workspaces.get(rpath.parent)
        if ws is None:
            ws = workspaces[rpath.parent] = find_workspace(rpath).resolve()
        texts.append((f, text, rpath, ws, _key(rpath, ws, text)))
    cache.prefetch(t[4] for t in texts)

    seen: dict[str, LoadedRecipe] = {}
    fresh: dict[str, str] = {}
    resolver = Resolver()
    for f, text, rpath, ws, key in texts:
        loaded: LoadedRecipe | None = None
        files: RecipeFiles | None = None
        cached = cache.get(key)
        if cached is not None:
            candidate = CachedRecipe(rpath, text, ws, cached)
            try:
                files = resolver.checked_files(candidate, key)
            except ValueError:  # a path now escapes the workspace: let the validator say so
                files = None
            if files is not None:
                loaded = candidate
        if loaded is None:
            loaded, problems = validate_document(f, text)
            if problems or loaded is None:
                result.problems.setdefault(str(f), []).extend(problems)
                continue
            fresh[key] = CachedRecipe.entry_for(loaded)
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
