"""The spec hash: the identity of what a recipe would train.

hash = sha256 of canonical JSON of
  - the normalised spec (every default written out, ``deploy`` and
    ``training.report_to`` and ``training.resources`` left out since they change
    where a version goes, where it trains and who watches, not what is trained:
    :data:`NOT_HASHED`),
  - the model name,
  - the content digest of every data file the recipe reads,
  - the base model's identity (digest of its config, tokenizer and weights),
  - TRAINING_FORMAT_VERSION, bumped when the training code changes output;
  - for objective grpo, the registered reward models the plan pinned (version and artifact
    digest), folded in by :func:`with_reward_models`.

Comments, key order, quoting and written-out defaults do not change it; one
byte of any data file does. File contents are hashed with xxh3-128, which
streams faster than the disk reads (sha256 would cap hashing at ~1.5 GB/s),
and digests are cached by (path, size, mtime_ns, inode) so unchanged files
are not re-read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from recipes.loading.recipe import LoadedRecipe

TRAINING_FORMAT_VERSION = 1
_CHUNK = 1 << 20

# Files of a model folder that define its behaviour (weights, config, tokenizer).
_MODEL_FILE_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja")


class DigestCache:
    """File digests keyed by (path, size, mtime_ns, inode), in a small SQLite file.

    SQLite rather than a JSON file: several reconcilers or test processes may
    hash at once, and SQLite gives atomic upserts without our own locking.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection | None:
        if self._path is None:
            return None
        if self._conn is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER, "
                "mtime_ns INTEGER, inode INTEGER, digest TEXT)"
            )
            self._conn = conn
        return self._conn

    def get(self, path: Path, st: os.stat_result) -> str | None:
        with self._lock:
            db = self._db()
            if db is None:
                return None
            row = db.execute(
                "SELECT digest FROM digests WHERE path=? AND size=? AND mtime_ns=? AND inode=?",
                (str(path), st.st_size, st.st_mtime_ns, st.st_ino),
            ).fetchone()
            return str(row[0]) if row else None

    def put(self, path: Path, st: os.stat_result, digest: str) -> None:
        with self._lock:
            db = self._db()
            if db is None:
                return
            with db:
                db.execute(
                    "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?)",
                    (str(path), st.st_size, st.st_mtime_ns, st.st_ino, digest),
                )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def file_digest(path: Path, cache: DigestCache | None = None) -> str:
    """``xxh3_128:<hex>`` of a file's bytes, streamed; cached when a cache is given."""
    path = path.resolve()
    st = path.stat()
    if cache is not None:
        hit = cache.get(path, st)
        if hit is not None:
            return hit
    # Read and hash in turn. A reader thread overlapping the two measured 0.83x of a
    # raw read on an idle machine but 0.70x (in turn: 0.85x) with other work on the
    # other core: python-xxhash holds the GIL, and a shared 2-CPU box is the norm.
    h = xxhash.xxh3_128()
    with path.open("rb", buffering=0) as f:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    digest = f"xxh3_128:{h.hexdigest()}"
    if cache is not None:
        cache.put(path, st, digest)
    return digest


def model_identity(model_dir: Path, cache: DigestCache | None = None) -> dict[str, str]:
    """Digest of each file that defines a local model, by relative name."""
    out: dict[str, str] = {}
    for f in sorted(model_dir.rglob("*")):
        if f.is_file() and f.suffix in _MODEL_FILE_SUFFIXES:
            out[f.relative_to(model_dir).as_posix()] = file_digest(f, cache)
    return out


@dataclass(frozen=True)
class SpecIdentity:
    """Everything the spec hash covers, kept so `reg plan` can say what changed."""

    spec_hash: str
    # A Mapping: a cached identity decodes it only when something reads it.
    normalized_spec: Mapping[str, Any]
    data_digests: dict[str, str]
    base_model: dict[str, str]
    # The reward models objective grpo's plan pinned ({ref, model, version, artifact_digest}).
    reward_models: tuple[Mapping[str, Any], ...] = ()

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "spec_hash": self.spec_hash,
            "normalized_spec": dict(self.normalized_spec),
            "data_digests": self.data_digests,
            "base_model": self.base_model,
        }
        if self.reward_models:
            out["reward_models"] = [dict(p) for p in self.reward_models]
        return out


def with_reward_models(ident: SpecIdentity, pins: list[dict[str, Any]]) -> SpecIdentity:
    """``ident`` with the reward models its plan pinned folded into the spec hash. Pure.

    A recipe naming ``NAME:production`` gets a new spec hash when the stage moves to another
    version (or the version's artifact differs), so promoting a reward model retrains the
    policy, and training reads the pinned version, never the stage.
    """
    if not pins:
        return ident
    payload = {"spec_hash": ident.spec_hash, "reward_models": pins}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return dataclasses.replace(ident, spec_hash=f"sha256:{digest}",
                               reward_models=tuple(dict(p) for p in pins))


# What the spec hash leaves out: settings that change where a version goes or who watches
# it train, never its weights. A field listed here must not reach the trained bytes.
NOT_HASHED: dict[str, Any] = {"deploy": True,
                              "training": {"report_to": True, "resources": True}}


def normalized_spec(loaded: LoadedRecipe) -> dict[str, Any]:
    spec = loaded.recipe.spec.model_dump(mode="json", exclude=NOT_HASHED)
    # training.distributed is hashed: N processes each take batch_size rows a step, so N
    # changes the effective batch, and even at the same effective batch the sums run in
    # another order (another adapter, near the same: docs/training.md). The default, one
    # process, is left out so that every recipe written before the field keeps its hash.
    if spec["training"].get("distributed") == {"nproc_per_node": 1}:
        del spec["training"]["distributed"]
    return {"name": loaded.name, "spec": spec}


def spec_identity(loaded: LoadedRecipe, cache: DigestCache | None = None) -> SpecIdentity:
    norm = normalized_spec(loaded)
    data = {rel: file_digest(loaded.resolve(rel), cache) for rel in loaded.data_refs()}
    base = model_identity(loaded.base_model_path, cache)
    payload = {
        "format": TRAINING_FORMAT_VERSION,
        "recipe": norm,
        "data": data,
        "base_model": base,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return SpecIdentity(f"sha256:{digest}", norm, data, base)


def spec_hash(loaded: LoadedRecipe, cache: DigestCache | None = None) -> str:
    return spec_identity(loaded, cache).spec_hash
