"""The artifact store: content-addressed blobs, written atomically, verified on read.

Every file of an artifact is stored once under its sha256
(``blobs/sha256/ab/abcdef...``); the artifact itself is its manifest.json,
stored the same way, so an artifact's digest is the digest of its manifest.
Identical files across versions are stored once.

A local directory is the default and uses plain ``os`` calls (temp file,
fsync, rename). Any other URL goes through fsspec (``s3://bucket/prefix``
with s3fs); object stores make a PUT visible only when complete, and since
keys are digests a half-uploaded object is never mistaken for a whole one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from recipes.artifact import FORBIDDEN_SUFFIXES, MANIFEST_NAME, verify_manifest
from recipes.core.fsutil import fsync_dir
from registry.errors import ArtifactCorrupt, ArtifactRefused, NotFound

_CHUNK = 1 << 20
DIGEST_PREFIX = "sha256:"


def digest_hex(digest: str) -> str:
    """``sha256:<hex>`` or ``<hex>`` -> ``<hex>``, checked."""
    hexpart = digest.removeprefix(DIGEST_PREFIX)
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ArtifactRefused(f"{digest!r} is not a sha256 digest")
    return hexpart


def blob_key(digest: str) -> str:
    h = digest_hex(digest)
    return f"blobs/sha256/{h[:2]}/{h}"


_REF_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")


def _ref_key(name: str) -> str:
    if _REF_NAME.match(name) is None:
        raise ArtifactRefused(f"{name!r} is not a ref name",
                              hint="use lower-case letters, digits, '.', '_', '-' and '/'")
    return f"refs/{name}"


def safe_relpath(rel: str) -> PurePosixPath:
    """A manifest path, refused if it could escape the artifact directory."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or rel != p.as_posix():
        raise ArtifactRefused(
            f"manifest path {rel!r} escapes the artifact directory",
            hint="artifact files must be plain relative paths",
        )
    return p


def _copy_hashing(src: IO[bytes], dst: IO[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        h.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return h.hexdigest(), size


class _Backend(Protocol):
    def exists(self, key: str) -> bool: ...
    def put(self, src: Path, key: str) -> None: ...
    def open(self, key: str) -> IO[bytes]: ...
    def read(self, key: str) -> bytes: ...
    def describe(self, key: str) -> str: ...
    def delete(self, key: str) -> None: ...
    def sweep(self) -> list[str]: ...


_TEMP_PREFIX = ".tmp."


def _locked_temp(dest: Path) -> tuple[Path, IO[bytes]]:
    """A new temp file beside ``dest``, opened for writing and exclusively flocked.

    A sweep may take the lock in the instant between the create and the flock and remove
    the file; the writer sees its name gone (or on another inode) and makes another."""
    while True:
        tmp = dest.with_name(f"{_TEMP_PREFIX}{dest.name}.{uuid.uuid4().hex[:8]}")
        f = tmp.open("xb")
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            if os.stat(tmp).st_ino == os.fstat(f.fileno()).st_ino:
                return tmp, f
        except FileNotFoundError:
            pass
        f.close()


def _remove_if_abandoned(tmp: Path) -> bool:
    try:
        f = tmp.open("rb")
    except FileNotFoundError:
        return False  # renamed into place or removed by its writer meanwhile
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer
        try:
            if os.stat(tmp).st_ino != os.fstat(f.fileno()).st_ino:
                return False
        except FileNotFoundError:
            return False
        tmp.unlink()
        return True


class _LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def put(self, src: Path, key: str) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp, fout = _locked_temp(dest)
        try:
            with src.open("rb") as fin, fout:
                shutil.copyfileobj(fin, fout, _CHUNK)
                fout.flush()
                os.fsync(fout.fileno())
                os.replace(tmp, dest)  # under the lock: a sweep never takes a live write
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(dest.parent)

    def sweep(self) -> list[str]:
        """Remove the temp files of writers that died mid-write; returns their keys.

        A writer holds an exclusive ``flock`` on its temp file until the rename, and the
        kernel drops it when the process dies, however it dies. So a temp file whose lock
        can be taken belongs to no one: safe to remove at once, beside live writers."""
        removed: list[str] = []
        for folder in (self.root / "blobs", self.root / "refs"):
            if not folder.is_dir():
                continue
            for tmp in folder.rglob(f"{_TEMP_PREFIX}*"):
                if tmp.is_file() and _remove_if_abandoned(tmp):
                    removed.append(tmp.relative_to(self.root).as_posix())
        return sorted(removed)

    def open(self, key: str) -> IO[bytes]:
        return (self.root / key).open("rb")

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def describe(self, key: str) -> str:
        return str(self.root / key)

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


class _FsspecBackend:
    def __init__(self, url: str) -> None:
        import fsspec

        fs, root = fsspec.core.url_to_fs(url)
        self.fs: Any = fs
        self.root = root.rstrip("/")
        self.url = url.rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def put(self, src: Path, key: str) -> None:
        # Object stores publish a PUT atomically; other filesystems get temp + move.
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if {"s3", "s3a", "gs", "gcs", "az", "abfs"} & set(protocols):
            self.fs.put_file(str(src), self._path(key))
            return
        tmp = self._path(f"tmp/{uuid.uuid4().hex}")
        self.fs.put_file(str(src), tmp)
        self.fs.mv(tmp, self._path(key))

    def open(self, key: str) -> IO[bytes]:
        f: IO[bytes] = self.fs.open(self._path(key), "rb")
        return f

    def read(self, key: str) -> bytes:
        # One GET: an open file would pin the ETag its HEAD saw, and refuse an object that
        # was replaced in between (a ref is replaced while others read it).
        data: bytes = self.fs.cat_file(self._path(key))
        return data

    def describe(self, key: str) -> str:
        return f"{self.url}/{key}"

    def delete(self, key: str) -> None:
        if self.fs.exists(self._path(key)):
            self.fs.rm(self._path(key))

    def sweep(self) -> list[str]:
        return []  # an object store shows a PUT only once it is whole: nothing half-written


class ArtifactStore:
    """Content-addressed blobs in a local directory or an fsspec URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        if "://" not in url or url.startswith("file://"):
            self._backend: _Backend = _LocalBackend(Path(url.removeprefix("file://")))
        else:
            self._backend = _FsspecBackend(url)

    # -- blobs --------------------------------------------------------------------------------

    def has(self, digest: str) -> bool:
        return self._backend.exists(blob_key(digest))

    def put_file(self, path: Path, expected: str | None = None) -> str:
        """Store a file; returns its ``sha256:<hex>``. Idempotent: a stored digest is skipped.

        With ``expected``, the file's bytes must hash to it (else ArtifactCorrupt).
        """
        with path.open("rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
        if expected is not None and actual != digest_hex(expected):
            raise ArtifactCorrupt(
                f"{path}: sha256 {actual[:12]}... is not the expected "
                f"{digest_hex(expected)[:12]}...",
                hint="the file changed while it was being stored; train or fetch it again",
            )
        key = blob_key(actual)
        if not self._backend.exists(key):
            self._backend.put(path, key)
        return DIGEST_PREFIX + actual

    def put_bytes(self, data: bytes, scratch: Path) -> str:
        """Store bytes (e.g. a manifest) through a scratch file in ``scratch``'s folder."""
        tmp = scratch.with_name(f".tmp.blob.{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_bytes(data)
            return self.put_file(tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def get_file(self, digest: str, dest: Path) -> None:
        """Copy a blob to ``dest`` atomically, refusing it if its bytes do not match."""
        key = blob_key(digest)
        if not self._backend.exists(key):
            raise NotFound(
                f"blob {digest} is missing from the artifact store {self.url}",
                hint="the store was cleaned or points elsewhere; check REG_ARTIFACT_STORE",
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".tmp.{dest.name}.{uuid.uuid4().hex[:8]}")
        try:
            with self._backend.open(key) as src, tmp.open("wb") as out:
                actual, _ = _copy_hashing(src, out)
                out.flush()
                os.fsync(out.fileno())
            if actual != digest_hex(digest):
                raise ArtifactCorrupt(
                    f"stored blob {self._backend.describe(key)} hashes to sha256 {actual[:12]}..., "
                    f"not {digest_hex(digest)[:12]}...: the artifact store is corrupt",
                    hint="restore the blob from a backup or register the artifact again",
                )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def get_bytes(self, digest: str) -> bytes:
        key = blob_key(digest)
        if not self._backend.exists(key):
            raise NotFound(f"blob {digest} is missing from the artifact store {self.url}")
        with self._backend.open(key) as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != digest_hex(digest):
            raise ArtifactCorrupt(
                f"stored blob {self._backend.describe(key)} does not match its digest {digest}",
                hint="restore the blob from a backup or register the artifact again",
            )
        return data

    def sweep(self) -> list[str]:
        """Remove what writers killed mid-write left (their temp files); returns the keys.

        Safe beside live writers (see ``_LocalBackend.sweep``); the reconciler calls it at
        the start of each pass, so a kill at any moment leaves nothing behind for long."""
        return self._backend.sweep()

    # -- refs: small mutable records beside the blobs ------------------------------------------

    def put_ref(self, name: str, text: str) -> None:
        """Write (or replace) ``refs/<name>`` atomically: a Ray run's newest checkpoint is
        one, so a run resumed on another node finds it without a shared disk. Refs are
        work in flight, never registry state: versions, runs and stages live in the
        database, which only the reconciler writes."""
        key = _ref_key(name)
        with tempfile.TemporaryDirectory(prefix="reg-ref-") as tmp:
            src = Path(tmp) / "ref"
            src.write_text(text, encoding="utf-8")
            self._backend.put(src, key)

    def get_ref(self, name: str) -> str | None:
        """The text of ``refs/<name>``, or None when there is none."""
        key = _ref_key(name)
        try:
            return self._backend.read(key).decode("utf-8")
        except FileNotFoundError:
            return None

    def delete_ref(self, name: str) -> None:
        """Remove ``refs/<name>`` (none there is fine): a run's checkpoint ref once the
        run's artifact is in the store."""
        self._backend.delete(_ref_key(name))

    # -- artifacts ----------------------------------------------------------------------------

    def put_artifact(self, root: Path) -> tuple[str, dict[str, Any], int]:
        """Verify and store an artifact directory; returns (digest, manifest, total bytes).

        The manifest's blob goes last: an artifact whose manifest is stored has
        all its files stored.
        """
        manifest = verify_manifest(root)
        check_file_kinds(root, manifest)
        total = 0
        for entry in manifest["files"]:
            rel = safe_relpath(entry["path"])
            self.put_file(root / rel, entry["sha256"])
            total += int(entry["size"])
        digest = self.put_file(root / MANIFEST_NAME)
        return digest, manifest, total

    def materialize(self, digest: str, dest_root: Path) -> Path:
        """The artifact as a local directory ``dest_root/<hex>``, every file verified.

        Idempotent (an existing, intact copy is reused) and atomic (built in a
        temp directory, then renamed; a concurrent fetch of the same artifact
        wins or loses the rename harmlessly).
        """
        dest_root.mkdir(parents=True, exist_ok=True)
        target = dest_root / digest_hex(digest)
        if target.is_dir():
            try:
                verify_manifest(target)
                return target
            except Exception:  # a damaged cache copy is rebuilt, never trusted
                trash = dest_root / f".trash.{target.name}.{uuid.uuid4().hex[:8]}"
                os.replace(target, trash)
                shutil.rmtree(trash, ignore_errors=True)
        tmp = dest_root / f".tmp.{target.name}.{uuid.uuid4().hex[:8]}"
        try:
            manifest_bytes = self.get_bytes(digest)
            manifest = json.loads(manifest_bytes)
            for entry in manifest["files"]:
                rel = safe_relpath(entry["path"])
                self.get_file(entry["sha256"], tmp / rel)
            (tmp / MANIFEST_NAME).write_bytes(manifest_bytes)
            verify_manifest(tmp)
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
            fsync_dir(dest_root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def check_file_kinds(root: Path, manifest: dict[str, Any]) -> None:
    """Safetensors and text only: pickles and unknown binaries are refused."""
    bad: list[str] = []
    for entry in manifest["files"]:
        rel = safe_relpath(entry["path"])
        path = root / rel
        if path.suffix in FORBIDDEN_SUFFIXES:
            bad.append(f"{rel} (pickle format)")
        elif path.suffix == ".safetensors":
            if not _looks_like_safetensors(path):
                bad.append(f"{rel} (not a safetensors file)")
        elif not _is_text(path):
            bad.append(f"{rel} (binary, not safetensors)")
    if bad:
        raise ArtifactRefused(
            f"{root}: the artifact store accepts safetensors and text files only; refused: "
            + ", ".join(bad),
            hint="save weights with safetensors and remove other binary files",
        )


def _looks_like_safetensors(path: Path) -> bool:
    # The format: 8-byte little-endian header length, then a JSON header.
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            return False
        n = int.from_bytes(head, "little")
        if n <= 0 or n > min(100 << 20, path.stat().st_size - 8):
            return False
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return False
    return isinstance(header, dict)


def _is_text(path: Path) -> bool:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            if b"\x00" in chunk:
                return False
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError as e:
                # A multi-byte character split at the chunk's end is still text.
                if e.start < len(chunk) - 3:
                    return False
    return True
