"""Write prepared splits and the report to a folder, all or nothing.

Files go to a temporary sibling folder, are fsynced, and the folder is renamed
into place; an older folder is moved aside first and removed after. A reader
sees the old folder or the new one, never a mix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from recipes.core.fsutil import atomic_dir

REPORT_FILE = "data_report.json"
# Where `reg data` writes a recipe's prepared data when no --out is given, under its
# workspace; `reg doctor` reads the report there.
DATA_DIR = Path(".reg") / "data"


def default_data_dir(workspace: Path, name: str) -> Path:
    """``WORKSPACE/.reg/data/NAME``: the prepared data of recipe ``name`` by default."""
    return workspace / DATA_DIR / name


def _write(path: Path, lines: Iterable[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(line)


def write_prepared(out_dir: Path, splits: Mapping[str, list[dict[str, Any]]],
                   report: dict[str, Any]) -> Path:
    """``out_dir/{split}.jsonl`` for each split and ``out_dir/data_report.json``."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for name, rows in splits.items():
            _write(tmp / f"{name}.jsonl",
                   (json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        _write(tmp / REPORT_FILE, [json.dumps(report, indent=2, ensure_ascii=False) + "\n"])
    return out_dir
