"""The spec hash: the identity of what a recipe would train.

hash = sha256 of canonical JSON of
  - the normalised spec (every default written out, ``deploy`` left out since
    it changes where a version goes, not what is trained),
  - the model name,
  - the content digest of every data file the recipe reads,
  - the base model's identity (digest of its config, tokenizer and weights),
  - TRAINING_FORMAT_VERSION, bumped when the training code changes output.

Comments, key order, quoting and written-out defaults do not change it; one
byte of any data file does. File contents are hashed with xxh3-128, which
streams faster than the disk reads (sha256 would cap hashing at ~1.5 GB/s),
and digests are cached by (path, size, mtime_ns, inode) so unchanged files
are not re-read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from recipes.loader import LoadedRecipe

TRAINING_FORMAT_VERSION = 1
_CHUNK = 1 << 20
_OVERLAP_MIN = 8 << 20  # files at least this large are read and hashed on two threads

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
    with path.open("rb", buffering=0) as f:
        h = _digest_overlapped(f) if st.st_size >= _OVERLAP_MIN else _digest_in_turn(f)
    digest = f"xxh3_128:{h.hexdigest()}"
    if cache is not None:
        cache.put(path, st, digest)
    return digest


def _digest_in_turn(f: io.FileIO) -> xxhash.xxh3_128:
    h = xxhash.xxh3_128()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    while n := f.readinto(buf):
        h.update(view[:n])
    return h


def _digest_overlapped(f: io.FileIO) -> xxhash.xxh3_128:
    """Read the next chunk while the last one is hashed.

    ``readinto`` releases the GIL while the kernel copies from the page cache;
    python-xxhash holds it while hashing. A reader thread with three buffers
    overlaps the two: 0.83-0.87x of a raw read of 512 MiB against 0.73x in
    turn (bench/bench_reconcile.py). Below _OVERLAP_MIN the thread costs more
    than it saves.
    """
    h = xxhash.xxh3_128()
    free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[bytearray, int] | BaseException] = queue.SimpleQueue()
    for _ in range(3):
        free.put(bytearray(_CHUNK))

    def read() -> None:
        try:
            while (buf := free.get()) is not None:
                n = f.readinto(buf) or 0
                full.put((buf, n))
                if not n:
                    return
        except BaseException as e:  # handed to the hashing thread, which raises it
            full.put(e)

    reader = threading.Thread(target=read, name="reg-digest-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = full.get()
            if isinstance(item, BaseException):
                raise item
            buf, n = item
            if not n:
                return h
            h.update(memoryview(buf)[:n])
            free.put(buf)
    finally:
        free.put(None)  # stops the reader when we leave early (an error, Ctrl-C)
        reader.join()


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

    def as_json(self) -> dict[str, Any]:
        return {
            "spec_hash": self.spec_hash,
            "normalized_spec": dict(self.normalized_spec),
            "data_digests": self.data_digests,
            "base_model": self.base_model,
        }


def normalized_spec(loaded: LoadedRecipe) -> dict[str, Any]:
    spec = loaded.recipe.spec.model_dump(mode="json", exclude={"deploy"})
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
