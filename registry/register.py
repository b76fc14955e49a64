"""Registering a training artifact as a new version of its model.

Verify the manifest, store every file content-addressed, then create the
version in one transaction. Blobs are stored before the transaction: they are
content-addressed, so a crash in between leaves only unreferenced blobs that
the next registration reuses, never a version pointing at missing bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipes.artifact import ArtifactError, read_manifest
from registry.versions import VersionStatus

REQUIRED_IDENTITY = ("name", "spec_hash")


@dataclass(frozen=True)
class ArtifactFacts:
    """What a version records, read from an artifact directory (no I/O beyond reading it)."""

    name: str
    spec_hash: str
    identity: dict[str, Any]
    metrics: dict[str, Any]
    gates_passed: bool | None
    gate_results: Any
    recipe_text: str
    status: VersionStatus


def read_facts(root: Path, status_override: VersionStatus | None = None) -> ArtifactFacts:
    """Read identity, metrics and recipe text; the status follows the gates unless overridden."""
    manifest = read_manifest(root)
    identity = manifest.get("identity")
    if not isinstance(identity, dict):
        raise ArtifactError(f"{root / 'manifest.json'}: field identity is missing or not an object")
    missing = [k for k in REQUIRED_IDENTITY if not isinstance(identity.get(k), str)]
    if missing:
        raise ArtifactError(
            f"{root / 'manifest.json'}: identity lacks {', '.join(missing)}",
            hint="the artifact was not written by `reg train`; train it again",
        )
    metrics: dict[str, Any] = {}
    metrics_path = root / "metrics.json"
    if metrics_path.is_file():
        try:
            loaded = json.loads(metrics_path.read_text())
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{metrics_path}: not valid JSON: {e}") from e
        if not isinstance(loaded, dict):
            raise ArtifactError(f"{metrics_path}: expected a JSON object")
        metrics = finite_json(loaded)
    gates = metrics.get("gates_passed")
    gates_passed = gates if isinstance(gates, bool) else None
    recipe_path = root / "recipe.yaml"
    recipe_text = recipe_path.read_text(encoding="utf-8") if recipe_path.is_file() else ""
    status = status_override or (
        VersionStatus.rejected if gates_passed is False else VersionStatus.ready
    )
    return ArtifactFacts(
        name=identity["name"],
        spec_hash=identity["spec_hash"],
        identity=identity,
        metrics=metrics,
        gates_passed=gates_passed,
        # metrics.json (written by recipes.evaluation.evaluate) lists each gate under "gates".
        gate_results=metrics.get("gates"),
        recipe_text=recipe_text,
        status=status,
    )


def finite_json(value: Any) -> Any:
    """``value`` with NaN and infinities as None: a diverged run writes ``NaN`` losses, which
    Python's json reads and SQLite stores, but PostgreSQL's JSON type refuses (JSON has no such
    token), so the same artifact would register on one database and not the other. The
    artifact's own metrics.json keeps the original text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return value


def as_str_dict(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
