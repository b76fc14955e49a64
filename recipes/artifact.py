"""The training artifact: a directory the registry stores as one version.

Layout (written by ``recipes.training.entry``, verified by ``registry``):

    adapter_config.json          PEFT config (or config.json for method=full)
    adapter_model.safetensors    weights; never pickles
    tokenizer files              only when training changed the tokenizer
    recipe.yaml                  the exact recipe text that was trained
    data_report.json             the data pipeline's report
    metrics.json                 evaluation results and gate verdicts
    probes.json                  greedy answers to a few test prompts (the rollout's
                                 identity check); absent without a test split
    train_log.jsonl              one JSON object per logged step
    manifest.json                sha256 and size of every other file, plus
                                 identity fields (name, spec_hash, ...) and, with
                                 training.report_to, where the run was tracked
                                 (``tracking``: recipes.training.tracking.record)

The manifest is written last, so a directory with a valid manifest is
complete. sha256 (not xxh3) because this digest is a security boundary: the
serving engine loads what it names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipes.core.errors import RegError
from recipes.core.fsutil import atomic_write_text

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
# Pickle-based formats are refused anywhere an artifact is written or read.
FORBIDDEN_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy")


class ArtifactError(RegError):
    """An artifact directory is incomplete, altered, or holds forbidden files."""


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    sha256: str
    size: int


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith(".tmp")
    )


def refuse_pickles(root: Path) -> None:
    bad = [p.relative_to(root).as_posix() for p in _files(root) if p.suffix in FORBIDDEN_SUFFIXES]
    if bad:
        raise ArtifactError(
            f"{root} holds pickle-format files: {', '.join(bad)}",
            hint="reg stores safetensors and text only; save weights with safetensors",
        )


def write_manifest(root: Path, identity: dict[str, Any],
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hash every file under ``root`` and write manifest.json atomically (temp + rename);
    ``extra`` adds top-level keys (``tracking``) beside the identity and the files."""
    refuse_pickles(root)
    files = [
        {"path": p.relative_to(root).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size}
        for p in _files(root)
    ]
    manifest = {**(extra or {}), "manifest_version": MANIFEST_VERSION, "identity": identity,
                "files": files}
    atomic_write_text(root / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(
            f"{root} has no {MANIFEST_NAME}: not a complete training artifact",
            hint="train it with `reg train` (the manifest is written last, when it is complete)",
        )
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON: {e}") from e
    if data.get("manifest_version") != MANIFEST_VERSION or not isinstance(data.get("files"), list):
        raise ArtifactError(f"{path} is not a reg manifest (version {MANIFEST_VERSION})")
    return data


def verify_manifest(root: Path) -> dict[str, Any]:
    """Check that the files under ``root`` are exactly those of the manifest, byte for byte."""
    manifest = read_manifest(root)
    refuse_pickles(root)
    listed = {e["path"]: e for e in manifest["files"]}
    present = {p.relative_to(root).as_posix() for p in _files(root)}
    missing = sorted(set(listed) - present)
    extra = sorted(present - set(listed))
    if missing or extra:
        raise ArtifactError(
            f"{root} does not match its manifest "
            f"(missing: {missing or '-'}, extra: {extra or '-'})",
            hint="the artifact was changed after training; train it again",
        )
    for rel, entry in listed.items():
        digest = sha256_file(root / rel)
        if digest != entry["sha256"]:
            raise ArtifactError(
                f"{root / rel}: sha256 {digest[:12]}... does not match the manifest's "
                f"{entry['sha256'][:12]}...",
                hint="the file is corrupt or was edited; train or fetch it again",
            )
    return manifest
