"""TensorBoard as a recipe's tracker, with real training on the tiny Llama: event files under
the workdir that TensorBoard's own reader reads back, the record in the manifest, and the
same adapter bytes as without tracking (which is why report_to is not in the spec hash)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.artifact import verify_manifest
from recipes.training.entry import train
from recipes.training.progress import read_log
from recipes.training.tracking.record import TrackingRecord
from tests.support.factories import LoadedRecipeFactory

pytestmark = pytest.mark.slow

QUICK = {"spec.evaluation.general": None, "spec.evaluation.generation_examples": 1,
         "spec.training.max_steps": 6}


def test_tensorboard_events_land_in_the_workdir_and_read_back(
    make_recipe: LoadedRecipeFactory, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import (  # type: ignore[import-untyped]
        EventAccumulator,
    )

    loaded = make_recipe("support-bot", name="tb", **QUICK,
                         **{"spec.training.report_to": "tensorboard"})
    workdir = tmp_path / "tb"
    result = train(loaded, workdir, progress=False)
    assert result.warnings == []

    logdir = workdir / "tensorboard"
    events = sorted(logdir.glob("events.out.tfevents.*"))
    assert events, f"no event file under {logdir}: {sorted(p.name for p in workdir.iterdir())}"
    reader = EventAccumulator(str(logdir))
    reader.Reload()
    assert "train/loss" in reader.Tags()["scalars"]
    logged = [(r["step"], r["loss"]) for r in read_log(workdir / "train_log.jsonl") if "loss" in r]
    read = [(e.step, e.value) for e in reader.Scalars("train/loss")]
    assert [s for s, _ in read] == [s for s, _ in logged]
    assert [v for _, v in read] == pytest.approx([v for _, v in logged], rel=1e-6)

    manifest = verify_manifest(result.artifact_dir)
    assert TrackingRecord.from_manifest(manifest) == TrackingRecord(tensorboard_dir=str(logdir))
    # The events stay in the workdir: the artifact holds what is served and judged.
    assert not any("tfevents" in f["path"] for f in manifest["files"])

    plain = train(make_recipe("support-bot", name="tb", **QUICK), tmp_path / "plain",
                  progress=False)
    assert (plain.artifact_dir / "adapter_model.safetensors").read_bytes() == (
        result.artifact_dir / "adapter_model.safetensors").read_bytes()
    assert "tracking" not in verify_manifest(plain.artifact_dir)
