"""Trackers without training: what the Trainer is told, the stored record and its links, and
what a tracker that is missing or unreachable does (an error, or a warning and no MLflow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from recipes.artifact import write_manifest
from recipes.core.errors import RegError
from recipes.schema import TrainingSpec
from recipes.training.loop import training_arguments
from recipes.training.model import DeviceSettings
from recipes.training.tracking.client import reachable, tag_registered
from recipes.training.tracking.record import (
    TRACKING_EXTRA,
    MlflowRun,
    TrackingRecord,
    public_uri,
    version_tags,
)
from recipes.training.tracking.session import TrackingSession
from tests.support.factories import LoadedRecipeFactory
from tests.support.services import free_port

CPU = DeviceSettings(device="cpu", precision="fp32", gradient_checkpointing=False,
                     dtype="float32")


def _args(report_to: object, override: list[str] | None = None) -> object:
    spec = TrainingSpec.model_validate_json(json.dumps({"report_to": report_to}))
    return training_arguments(spec, CPU, Path("/w"), 0.01, 64, has_validation=False,
                              report_to=override)["report_to"]


@pytest.mark.parametrize(("report_to", "override", "expected"), [
    pytest.param([], None, "none", id="none-by-default"),
    pytest.param("mlflow", None, ["mlflow"], id="one-name"),
    pytest.param(["mlflow", "tensorboard"], None, ["mlflow", "tensorboard"], id="a-list"),
    pytest.param(["mlflow", "tensorboard"], ["tensorboard"], ["tensorboard"],
                 id="mlflow-dropped-by-the-session"),
    pytest.param(["mlflow"], [], "none", id="all-dropped"),
])
def test_report_to_reaches_the_trainer_arguments(report_to: object, override: list[str] | None,
                                                 expected: object) -> None:
    assert _args(report_to, override) == expected


def test_transformers_takes_the_arguments() -> None:
    from transformers import TrainingArguments

    spec = TrainingSpec.model_validate_json('{"report_to": ["mlflow", "tensorboard"]}')
    args = training_arguments(spec, CPU, Path("/tmp/reg-args"), 0.01, 64, has_validation=False)
    assert TrainingArguments(**args).report_to == ["mlflow", "tensorboard"]


@pytest.mark.parametrize(("uri", "url"), [
    pytest.param("http://127.0.0.1:5000", "http://127.0.0.1:5000/#/experiments/7/runs/abc",
                 id="http"),
    pytest.param("https://mlflow.example.com/", "https://mlflow.example.com/#/experiments/7/runs/abc",
                 id="https-trailing-slash"),
    pytest.param("sqlite:///tmp/mlflow.db", "sqlite:///tmp/mlflow.db (experiment 7, run abc)",
                 id="local-store"),
])
def test_the_run_link_is_the_mlflow_ui_url_for_a_server(uri: str, url: str) -> None:
    assert MlflowRun(tracking_uri=uri, experiment_id="7", run_id="abc").url == url


def test_credentials_never_reach_the_record() -> None:
    assert public_uri("https://bob:s3cret@mlflow.example.com:8443/p") == (
        "https://mlflow.example.com:8443/p")
    assert public_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_the_record_round_trips_through_a_manifest_and_gives_the_links() -> None:
    record = TrackingRecord(
        mlflow=MlflowRun(tracking_uri="http://h:1", experiment_id="2", run_id="r", run_name="n"),
        tensorboard_dir="/w/tensorboard")
    assert TrackingRecord.from_manifest({"tracking": record.to_json()}) == record
    assert record.links() == [("mlflow run", "http://h:1/#/experiments/2/runs/r"),
                              ("tensorboard", "tensorboard --logdir /w/tensorboard")]
    assert TrackingRecord.from_manifest({}) is None
    assert TrackingRecord.from_manifest({"tracking": {"mlflow": {"run_id": 3}}}) is None


def test_version_tags_name_the_version_the_run_became() -> None:
    assert version_tags("support-bot", 3, "sha256:ab", "ready") == {
        "reg.model": "support-bot", "reg.version": "v3", "reg.version_ref": "support-bot@v3",
        "reg.status": "ready", "reg.artifact_digest": "sha256:ab"}


def test_a_tracker_missing_when_training_starts_is_an_error_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe the loader's cache served validated when mlflow was there; training says so."""
    monkeypatch.setitem(sys.modules, "mlflow", None)
    session = TrackingSession(("mlflow",), tmp_path, "m", "sha256:00")
    with pytest.raises(RegError, match="names mlflow, which is not installed") as err:
        session.start()
    assert err.value.hint == TRACKING_EXTRA
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_mlflow_leaves_mlflow_out_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    assert reachable(dead) is not None
    session = TrackingSession(("mlflow", "tensorboard"), tmp_path, "m", "sha256:00")
    session.start()
    assert session.report_to == ["tensorboard"]
    assert session.mlflow_run is None
    [warning] = session.warnings
    assert warning.startswith(f"MLflow at {dead} cannot be reached (ConnectError")
    assert "the version is registered all the same" in warning
    assert session.record() == TrackingRecord(tensorboard_dir=str(tmp_path / "tensorboard"))
    session.end("FINISHED")  # nothing to end: no error either


def test_tagging_an_unreachable_run_is_a_warning_not_an_error(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    record = TrackingRecord(mlflow=MlflowRun(tracking_uri=dead, experiment_id="1", run_id="r1"))
    (tmp_path / "a.txt").write_text("x")
    write_manifest(tmp_path, {"name": "m", "spec_hash": "sha256:00"},
                   extra={"tracking": record.to_json()})
    warning = tag_registered(tmp_path, model="m", number=2, digest="sha256:11", status="ready")
    assert warning is not None
    assert warning.startswith(f"MLflow run r1 at {dead} was not tagged with m@v2 (ConnectError")
    assert warning.endswith("the version is registered all the same, and `reg show m v2` "
                            "links the run")


def test_tagging_without_a_tracked_run_does_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    write_manifest(tmp_path, {"name": "m", "spec_hash": "sha256:00"})
    assert tag_registered(tmp_path, model="m", number=1, digest=None, status="ready") is None


def test_training_with_a_tracker_missing_fails_before_the_workdir_exists(
    make_recipe: LoadedRecipeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recipes.training.entry import train

    loaded = make_recipe("support-bot", name="untracked",
                         **{"spec.training.report_to": ["tensorboard", "mlflow"]})
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(RegError, match=r"training\.report_to names mlflow, which is not "
                                       r"installed") as err:
        train(loaded, tmp_path / "w", progress=False)
    assert err.value.hint == "pip install 'reg[tracking]'"
    assert not (tmp_path / "w").exists()
