"""Atomic, durable writes of files and folders: temp + fsync + rename.

One place for the dance that the tiny model, the example workspace, prepared
data, checkpoints, artifacts and the artifact store all need. Hand-written
rather than a library's because it is a few lines of ``os`` calls and the
libraries that offer atomic writes (``atomicwrites`` is unmaintained) cover
files, not folders.

What is moved aside or half-written is named ``.tmp*`` so that a crash leaves
something a later pass recognises and removes (see ``train_checkpoint``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a folder, so the names created or renamed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root`` and every directory, so a rename publishes whole files."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for fn in filenames:
            fd = os.open(os.path.join(dirpath, fn), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so readers see the old or the new content, never a torn one."""
    tmp = path.with_name(f".tmp.{path.name}.{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_dir(path: Path) -> None:
    """Rename away, then delete: a half-deleted folder never keeps a published name."""
    if not path.exists():
        return
    doomed = path.with_name(f".tmp-delete-{path.name}-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def replace_path(src: Path, dest: Path) -> None:
    """Rename ``src`` (a file or folder) to ``dest``, replacing what is there.

    An existing ``dest`` is renamed aside first (``os.replace`` cannot replace
    a non-empty folder), and removed only once the new one has its name.
    """
    old: Path | None = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".tmp-delete-{dest.name}-{os.getpid()}")
        _discard(old)  # a leftover of a killed run with the same pid
        os.replace(dest, old)
    os.replace(src, dest)
    fsync_dir(dest.parent)
    if old is not None:
        _discard(old)


def publish_dir(tmp: Path, final: Path) -> None:
    """Atomically move a fully written ``tmp`` to ``final`` (replacing an old ``final``)."""
    fsync_tree(tmp)
    replace_path(tmp, final)


@contextmanager
def staging_dir(dest: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``dest`` (same file system), removed on exit.

    It is made world-readable: ``mkdtemp`` makes it private, and what is
    built in it (models, data, workspaces) is meant to be shared.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        tmp.chmod(0o755)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Fill the yielded temporary folder; on a clean exit it becomes ``dest``.

    A reader sees the old ``dest`` or the new one, never a mix; on an error
    the temporary folder is removed and ``dest`` is left as it was.
    """
    with staging_dir(dest) as tmp:
        yield tmp
        publish_dir(tmp, dest)
