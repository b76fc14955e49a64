"""Write prepared splits and the report to a folder, all or nothing.

Files go to a temporary sibling folder, are fsynced, and the folder is renamed
into place; an older folder is moved aside first and removed after. A reader
sees the old folder or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPORT_FILE = "data_report.json"


def _write(path: Path, lines: Iterable[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_prepared(out_dir: Path, splits: Mapping[str, list[dict[str, Any]]],
                   report: dict[str, Any]) -> Path:
    """``out_dir/{split}.jsonl`` for each split and ``out_dir/data_report.json``."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; prepared data is meant to be read
        for name, rows in splits.items():
            _write(tmp / f"{name}.jsonl",
                   (json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        _write(tmp / REPORT_FILE, [json.dumps(report, indent=2, ensure_ascii=False) + "\n"])
        _fsync_dir(tmp)
        old: Path | None = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        _fsync_dir(out_dir.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
