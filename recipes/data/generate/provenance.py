"""Where generated rows came from: ``OUT.provenance.json``, written and read here only.

Kept beside the data file rather than in it, so the file a recipe names holds rows only
and the spec hash (a hash of that file's content) does not change with the time a run
finished; the reconciler reads neither this file nor the network.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from recipes.core.fsutil import atomic_write_text

PROVENANCE_VERSION = 1


def provenance_path(out: Path) -> Path:
    return out.with_name(out.name + ".provenance.json")


class TemplateInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str
    text: str
    answered_with: str | None = None  # synthesized chats: how the answer was asked


class Provenance(BaseModel):
    """One generation run's record, kept beside its data file."""

    model_config = ConfigDict(extra="forbid")

    version: int = PROVENANCE_VERSION
    mode: str  # augment | synthesize
    recipe: str
    output: str
    format: str
    rows: int
    sha256: str  # of the data file, so a stale provenance is visible
    endpoint: str
    model: str
    answered_by: dict[str, int]  # who answered, as the endpoint said, and how many requests
    template: TemplateInfo
    sampling: dict[str, float | int]
    seed: int
    n: int | None = None
    topics: list[str] | None = None
    count: int | None = None
    requests: int  # sent by the run that finished (earlier runs' answers were reused)
    retries: int
    retried: dict[str, int]  # by status code or error type
    resumed: int  # tasks answered by earlier, interrupted runs
    started_at: datetime
    finished_at: datetime
    report: dict[str, Any]

    def write(self, path: Path) -> None:
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> Provenance:
        return cls.model_validate_json(path.read_text(encoding="utf-8"))
