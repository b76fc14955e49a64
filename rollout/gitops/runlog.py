"""A training run's own log, ``<workdir>/run.log``, which ``reg logs RUN`` shows."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

LOG_NAME = "run.log"
TAIL_LINES = 40  # stored on a failed run, for a workdir on another machine


class RunLog:
    """Step lines, captured log records and tracebacks of one run.

    Appended to (a resumed run keeps the earlier attempt's lines) and flushed
    per line, so what a crash leaves behind is readable by ``reg logs``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def in_workdir(cls, workdir: Path) -> RunLog:
        return cls(workdir / LOG_NAME)

    def write(self, text: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with self.path.open("a", encoding="utf-8") as f:
            for line in text.rstrip("\n").splitlines() or [""]:
                f.write(f"{stamp} {line}\n")

    def include(self, title: str, text: str) -> None:
        """``title`` as a line of its own, then ``text`` as it is (lines another RunLog,
        e.g. a Ray node's, already stamped)."""
        self.write(title)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def tail(self, n: int = TAIL_LINES) -> str:
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Copy log records (transformers, trl, peft, ours) into the run log meanwhile."""
        handler = logging.FileHandler(self.path, encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            handler.close()
