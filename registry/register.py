"""Registering a training artifact as a new version of its model.

Verify the manifest, store every file content-addressed, then create the
version in one transaction. Blobs are stored before the transaction: they are
content-addressed, so a crash in between leaves only unreferenced blobs that
the next registration reuses, never a version pointing at missing bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.artifact import ArtifactError, read_manifest
from recipes.evaluation.report import EvaluationReport
from registry.versions import VersionStatus

if TYPE_CHECKING:
    from recipes.schema import Metadata
    from registry.tables import ModelBase

REQUIRED_IDENTITY = ("name", "spec_hash")
METRICS_FILE = "metrics.json"
RECIPE_FILE = "recipe.yaml"


@dataclass(frozen=True)
class ArtifactFacts:
    """What a version records, read from an artifact directory (no I/O beyond reading it)."""

    name: str
    spec_hash: str
    identity: dict[str, Any]
    report: EvaluationReport
    recipe_text: str
    status: VersionStatus
    metadata: Metadata | None  # the recipe's metadata, when its recipe.yaml has one

    @property
    def metrics(self) -> dict[str, Any]:
        """The report as the registry stores it (JSON; NaN and infinities as null)."""
        return self.report.to_json()

    @property
    def gates_passed(self) -> bool | None:
        return self.report.gates_passed

    @property
    def gate_results(self) -> list[dict[str, Any]] | None:
        return self.report.gate_results()


def read_facts(root: Path, status_override: VersionStatus | None = None) -> ArtifactFacts:
    """Read identity, metrics and recipe; the status follows the gates unless overridden."""
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
    metrics_path = root / METRICS_FILE
    report = EvaluationReport.read(metrics_path) if metrics_path.is_file() else (
        EvaluationReport())
    recipe_path = root / RECIPE_FILE
    recipe_text = recipe_path.read_text(encoding="utf-8") if recipe_path.is_file() else ""
    status = status_override or (
        VersionStatus.rejected if report.gates_passed is False else VersionStatus.ready
    )
    return ArtifactFacts(
        name=identity["name"],
        spec_hash=identity["spec_hash"],
        identity=identity,
        report=report,
        recipe_text=recipe_text,
        status=status,
        metadata=recipe_metadata(recipe_path, recipe_text),
    )


def recipe_metadata(path: Path, text: str) -> Metadata | None:
    """The ``metadata`` of the recipe an artifact was trained from.

    None when the text is not a recipe with a ``metadata`` mapping (an artifact put
    together by hand): its model keeps what it has. A metadata mapping with a bad field
    is an error naming the file and the field.
    """
    if "metadata" not in text:
        return None
    from pydantic import ValidationError
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from recipes.schema import Metadata

    try:
        doc = YAML(typ="safe").load(text)
    except YAMLError:
        return None
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(meta, dict):
        return None
    try:
        return Metadata.model_validate(meta)
    except ValidationError as e:
        problems = "; ".join(f"metadata.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                             for err in e.errors())
        raise ArtifactError(f"{path}: {problems}",
                            hint="fix the recipe and train again (`reg validate` checks it)"
                            ) from e


def metadata_changes(model: ModelBase, meta: Metadata) -> dict[str, tuple[Any, Any]]:
    """``{field: (stored, new)}`` for each of description, labels and owner that differs."""
    new = {"description": meta.description, "labels": dict(meta.labels), "owner": meta.owner}
    return {k: (getattr(model, k), v) for k, v in new.items() if getattr(model, k) != v}


def as_str_dict(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
