"""The loader's optional cache: what makes loading 1,000 unchanged recipes cheap.

Two costs dominate loading recipes that did not change: parsing YAML with
position tracking (ruamel's round-trip loader) and computing each spec
identity (a digest lookup per data file). Both are cached, keyed so that a
stale entry can never be used; pass a :class:`LoadCache` to
:func:`recipes.loading.loader.check_recipes`:

- :class:`RecipeCache` maps (recipe path, workspace, allowed roots, xxh3 of
  the file's text, fingerprint of the validating code: :func:`recipe_key`)
  to what a caller needs of the validated recipe (name, data files, base
  model, deploy actions) and the recipe as JSON. A hit builds no pydantic
  model: the :class:`CachedRecipe` validates that JSON only when something
  asks for the full recipe (training). The files it names are still checked
  on every load (one ``lstat`` each); any doubt falls back to the one
  validator (:func:`recipes.loading.validate.validate_document`), which is
  also what words every problem. Nothing invalid is ever cached.
- :class:`IdentityCache` maps everything :func:`recipes.identity.spec_identity`
  reads (the recipe's key above, the (size, mtime, inode) of each data file
  and of each base-model file, the training-format version) to the identity
  it returned. The base model folder is listed once per load, not once per
  recipe. The stat key is the same trust DigestCache already places in file
  metadata.
- :class:`MemoDigestCache` is a :class:`~recipes.identity.DigestCache` that
  reads the whole digest table once into memory (the key still includes
  size, mtime and inode, so an edited file misses).

The code fingerprint (:func:`code_fingerprint`: xxh3 of the sources that
validate, normalise and hash recipes, and the pydantic version) makes both
caches miss after any change to how recipes are validated, normalised or
hashed, without anyone remembering to bump a version.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from recipes.core.errors import ValidationFailed

# The suffixes model_identity reads: imported, not copied, so the cache key
# always covers exactly the files the spec hash covers.
from recipes.identity import (
    _MODEL_FILE_SUFFIXES,
    TRAINING_FORMAT_VERSION,
    DigestCache,
    SpecIdentity,
    spec_identity,
)
from recipes.loading.files import RecipeFiles, recipe_files
from recipes.loading.recipe import ALLOWED_ROOTS_ENV, LoadedRecipe
from recipes.loading.validate import validate_document

if TYPE_CHECKING:
    from recipes.schema import Recipe

# Bump when the meaning of a cached entry changes in a way the code fingerprint misses.
_RECIPE_CACHE_VERSION = "4"
_BATCH = 500  # keys per SELECT ... IN (SQLite allows 999 variables before 3.32)

_RECIPES = Path(__file__).resolve().parents[1]
# What decides a recipe's meaning and identity, relative to the recipes package;
# a folder stands for every module in it, so a module added there is covered too.
FINGERPRINTED = ("schema.py", "schema", "identity.py", "core", "loading")


def fingerprint_sources() -> list[Path]:
    """The source files :func:`code_fingerprint` covers, in a stable order."""
    out: list[Path] = []
    for rel in FINGERPRINTED:
        p = _RECIPES / rel
        if p.is_dir():
            out += sorted(p.rglob("*.py"))
        elif p.is_file():
            out.append(p)
    return out


@functools.cache
def code_fingerprint() -> str:
    """xxh3 of the code that decides what a recipe means and how it is cached, and of the
    pydantic version; read once per process."""
    import pydantic

    h = xxhash.xxh3_128(pydantic.VERSION.encode())
    for source in fingerprint_sources():
        h.update(source.relative_to(_RECIPES).as_posix().encode())
        h.update(source.read_bytes())
    return h.hexdigest()


def recipe_key(path: Path, workspace: Path, text: str) -> str:
    """The cache key of a recipe's text at ``path`` in ``workspace`` (see the module doc)."""
    h = xxhash.xxh3_128(text.encode("utf-8")).hexdigest()
    roots = os.environ.get(ALLOWED_ROOTS_ENV, "")
    return (f"{_RECIPE_CACHE_VERSION}\0{code_fingerprint()}\0{path}\0{workspace}\0{roots}"
            f"\0{h}")


class KeyValueFile:
    """A string -> string table in a small SQLite file, read by the keys asked for, written through.

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


class RecipeCache(KeyValueFile):
    """Validated recipes by content key: see :class:`CachedRecipe` for the entry."""

    table = "recipes"


class IdentityCache(KeyValueFile):
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
        own_key = files.key or recipe_key(loaded.path, loaded.workspace, loaded.text)
        source = "\0".join((str(TRAINING_FORMAT_VERSION), own_key, json.dumps(data),
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


class CachedRecipe(LoadedRecipe):
    """A valid recipe served from :class:`RecipeCache` without building its pydantic model.

    A pass needs only the name, the files and the deploy actions, which were
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
                            "promote_to": loaded.promote_to, "rolls_out": loaded.rolls_out})
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

    @property
    def rolls_out(self) -> bool:
        return bool(self._facts["rolls_out"])

    def data_refs(self) -> list[str]:
        return [str(r) for r in self._facts["data"]]


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


@dataclass
class LoadCache:
    """The loader's three caches, in one folder (``$REG_HOME/cache`` for the reconciler).

    Delete the folder at any time: the next load refills it. ``LoadCache(None)``
    keeps everything in memory (one process, e.g. a test or ``--watch``).
    """

    recipes: RecipeCache
    identities: IdentityCache
    digests: MemoDigestCache

    @classmethod
    def under(cls, folder: Path | None) -> LoadCache:
        def at(name: str) -> Path | None:
            return None if folder is None else folder / name

        return cls(RecipeCache(at("recipes.sqlite")), IdentityCache(at("identities.sqlite")),
                   MemoDigestCache(at("digests.sqlite")))

    def identities_of(self, recipes: Sequence[LoadedRecipe],
                      files: Mapping[Path, RecipeFiles]) -> dict[str, SpecIdentity | OSError]:
        """Each recipe's spec identity by model name, or the OSError that stopped it (a data
        file that vanished or became unreadable since validation).

        ``files`` are the recipes' resolved files by recipe path, as
        :func:`~recipes.loading.loader.check_recipes` fills them.
        """
        self.identities.new_pass()
        keys: dict[str, str | OSError] = {}
        for loaded in recipes:
            try:
                keys[loaded.name] = self.identities.key(loaded, files.get(loaded.path))
            except OSError as e:
                keys[loaded.name] = e
        self.identities.prefetch(k for k in keys.values() if isinstance(k, str))
        out: dict[str, SpecIdentity | OSError] = {}
        for loaded in recipes:
            key = keys[loaded.name]
            try:
                if isinstance(key, OSError):
                    raise key
                out[loaded.name] = self.identities.identity(
                    loaded, self.digests, files.get(loaded.path), key)
            except OSError as e:
                out[loaded.name] = e
        self.identities.flush()
        return out

    def close(self) -> None:
        self.recipes.close()
        self.identities.close()
        self.digests.close()
