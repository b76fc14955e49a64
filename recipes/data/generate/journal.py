"""The partial file of a generation run: what is answered so far, one JSON line per task.

``OUT.partial.jsonl`` starts with a header line holding the run's settings fingerprint; each
batch of answers is appended with one ``write`` of whole lines and fsynced, so a crash
leaves whole batches and at most one torn last line, which reading ignores. A rerun with
the same settings resumes from it; with other settings it is refused (mixing answers of
two models or templates in one file would make the provenance false).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipes.core.errors import DataError
from recipes.core.fsutil import fsync_dir

JOURNAL_VERSION = 1


@dataclass(frozen=True)
class Record:
    """A task's answers (``None`` for an empty one) and who answered each request."""

    key: str
    texts: list[str | None]
    answered_by: list[str]  # one label per request, e.g. "support-bot v1 (production)"

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "texts": self.texts, "answered_by": self.answered_by}


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _record(value: Any) -> Record | None:
    if not isinstance(value, dict) or not isinstance(value.get("key"), str):
        return None
    texts, by = value.get("texts"), value.get("answered_by")
    if not isinstance(texts, list) or not all(t is None or isinstance(t, str) for t in texts):
        return None
    if not isinstance(by, list) or not all(isinstance(b, str) for b in by):
        return None
    return Record(value["key"], texts, by)


class Journal:
    """The partial file of one output; :meth:`open` reads what an earlier run left."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.records: dict[str, Record] = {}

    @classmethod
    def open(cls, out: Path, fingerprint: str, settings: dict[str, Any]) -> Journal:
        journal = cls(partial_path(out), fingerprint)
        if journal.path.exists():
            journal._read(settings)
        return journal

    def _read(self, settings: dict[str, Any]) -> None:
        raw = self.path.read_bytes()
        if not raw.endswith(b"\n"):  # a torn last line: cut it, so appends start a line
            raw = raw[: raw.rfind(b"\n") + 1]
            with self.path.open("r+b") as f:
                f.truncate(len(raw))
        if not raw:  # not even a whole header: nothing was answered
            self.path.unlink()
            return
        lines = raw.decode("utf-8", errors="replace").split("\n")
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("fingerprint") != self.fingerprint:
            was = header.get("settings") if isinstance(header, dict) else None
            raise DataError(
                f"{self.path} holds a run started with other settings "
                f"({json.dumps(was, sort_keys=True)}; now {json.dumps(settings, sort_keys=True)})",
                hint=f"rerun with the same flags to resume it, or delete {self.path} to start "
                "over")
        # The last line is empty after a whole batch, or torn by a crash: never a record.
        for line in lines[1:-1]:
            try:
                rec = _record(json.loads(line))
            except json.JSONDecodeError:
                rec = None
            if rec is not None:
                self.records[rec.key] = rec

    def append(self, records: Iterable[Record], settings: dict[str, Any]) -> None:
        """Append one batch in one write (with the header first if the file is new)."""
        batch = list(records)
        if not batch:
            return
        lines = [json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in batch]
        new = not self.path.exists()
        if new:
            lines.insert(0, json.dumps({"reg_generate": JOURNAL_VERSION,
                                        "fingerprint": self.fingerprint,
                                        "settings": settings}) + "\n")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, "".join(lines).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_dir(self.path.parent)
        for r in batch:
            self.records[r.key] = r

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
