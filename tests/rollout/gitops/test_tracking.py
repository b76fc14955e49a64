"""``training.report_to: mlflow`` end to end: `reg reconcile` trains the tiny model against a
real MLflow tracking server (loopback, SQLite backend), the version is registered, the MLflow
run carries the loss, the evaluation and the reg tags (so the version is found from the
run), `reg show` prints the run's link (so the run is found from the version); an MLflow that
does not answer costs a warning, never the version; turning tracking off retrains nothing;
an interrupted run continues its MLflow run."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from recipes.training.progress import read_log
from registry.settings import Settings
from tests.support.cli import cli_env, git, reg_cmd, reg_ok, run_reg
from tests.support.factories import RegistryFactory, WorkspaceFactory
from tests.support.mlflow_server import start_mlflow
from tests.support.paths import REPO
from tests.support.services import free_port, service_missing

pytestmark = pytest.mark.slow

# What MLflow and its server print on their own, which the reconciler's output must not carry.
NOISE = ("View run", "View experiment", "alembic", "INFO mlflow", "Traceback", "🏃")


@pytest.fixture(scope="session")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server for the session, runs in a SQLite file."""
    try:
        url, stop = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    except FileNotFoundError:
        service_missing("mlflow (the reg[tracking] extra)")
        raise
    try:
        yield url
    finally:
        stop()


def tracked(report_to: str) -> Callable[[str], str]:
    """Few steps and evaluation rows (seconds on a CPU), reporting to ``report_to``."""

    def edit(text: str) -> str:
        for old, new in (("max_steps: 250", "max_steps: 6"),
                         ("generation_examples: 8", "generation_examples: 1"),
                         ("max_examples: 32", "max_examples: 4"),
                         ("  training:\n", f"  training:\n    report_to: {report_to}\n")):
            assert old in text, old
            text = text.replace(old, new, 1)
        return text

    return edit


def _reconcile(settings: Settings, ws: Path, **env: str) -> str:
    """`reg reconcile --once` as a user runs it, in a wide terminal; it must succeed."""
    cp = subprocess.run(reg_cmd("reconcile", str(ws / "recipes"), "--once"), cwd=REPO,
                        env=cli_env(settings, COLUMNS="300", **env), capture_output=True,
                        text=True, timeout=900, check=False)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, out
    for noise in NOISE:
        assert noise not in out, f"{noise!r} in the reconciler's output:\n{out}"
    return out


def test_the_mlflow_run_finds_its_version_and_reg_show_links_the_run(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory,
    mlflow_url: str,
) -> None:
    from mlflow import MlflowClient

    ws = workspace(keep=("support-bot",), edit={"support-bot": tracked("mlflow")})
    experiment = f"reg-test-{uuid.uuid4().hex[:8]}"
    out = _reconcile(sqlite_settings, ws, MLFLOW_TRACKING_URI=mlflow_url,
                     MLFLOW_EXPERIMENT_NAME=experiment)
    assert "support-bot v1 registered" in out
    assert "warning" not in out

    reg = open_registry(sqlite_settings)
    [v] = reg.list_versions("support-bot")
    assert v.status == "ready" and v.run_id is not None
    run_row = reg.get_run(v.run_id)

    # From the version to the run: the link reg show prints is the MLflow UI's.
    client = MlflowClient(mlflow_url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    [run] = client.search_runs([exp.experiment_id])
    link = f"{mlflow_url}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
    shown = reg_ok(sqlite_settings, "show", "support-bot", "v1")
    assert link in shown.stdout, shown.stdout
    data = json.loads(reg_ok(sqlite_settings, "show", "support-bot", "v1", "--json").stdout)
    assert data["tracking"]["mlflow_url"] == link
    assert data["tracking"]["mlflow"]["run_id"] == run.info.run_id

    # From the run to the version: its tags, searchable as MLflow users search.
    [found] = client.search_runs([exp.experiment_id],
                                 filter_string="tags.`reg.version_ref` = 'support-bot@v1'")
    assert found.info.run_id == run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"support-bot-{v.spec_hash.removeprefix('sha256:')[:12]}"
    tags = run.data.tags
    assert tags["reg.model"] == "support-bot"
    assert tags["reg.spec_hash"] == v.spec_hash
    assert tags["reg.version"] == "v1"
    assert tags["reg.artifact_digest"] == v.artifact_digest
    assert tags["reg.status"] == "ready"

    # What transformers' callback logged: every step's loss, as the run's own log has it.
    logged = [(r["step"], r["loss"]) for r in read_log(Path(run_row.workdir) / "train_log.jsonl")
              if "loss" in r]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                         "loss"))
    assert [s for s, _ in history] == [s for s, _ in logged] and len(logged) == 6
    assert [x for _, x in history] == pytest.approx([x for _, x in logged], rel=1e-6)
    # ... the evaluation reg adds, and the Trainer's params.
    assert run.data.metrics["test.perplexity"] == pytest.approx(v.metrics["test"]["perplexity"])
    assert run.data.params["max_steps"] == "6"

    # Turning tracking off changes no spec hash: nothing retrains.
    recipe = ws / "recipes" / "support-bot.yaml"
    recipe.write_text(recipe.read_text().replace("    report_to: mlflow\n", ""))
    git(ws, "commit", "-qam", "tracking off")
    again = run_reg(sqlite_settings, "reconcile", str(ws / "recipes"), "--once", "--json",
                    MLFLOW_TRACKING_URI=mlflow_url, MLFLOW_EXPERIMENT_NAME=experiment)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["outcomes"] == []
    assert [x.number for x in reg.list_versions("support-bot")] == [1]


def test_an_mlflow_that_does_not_answer_costs_a_warning_not_the_version(
    workspace: WorkspaceFactory, sqlite_settings: Settings, open_registry: RegistryFactory,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    ws = workspace(keep=("support-bot",), edit={"support-bot": tracked("[mlflow, tensorboard]")})
    out = _reconcile(sqlite_settings, ws, MLFLOW_TRACKING_URI=dead)
    assert f"support-bot tracking warning: MLflow at {dead} cannot be reached" in out, out
    assert "training goes on without MLflow, and the version is registered all the same" in out
    assert "support-bot v1 registered" in out

    reg = open_registry(sqlite_settings)
    [v] = reg.list_versions("support-bot")
    assert v.status == "ready" and v.run_id is not None
    workdir = Path(reg.get_run(v.run_id).workdir)
    assert f"warning: MLflow at {dead} cannot be reached" in (workdir / "run.log").read_text()
    # TensorBoard, which needs no server, recorded the run all the same.
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    shown = reg_ok(sqlite_settings, "show", "support-bot", "v1").stdout
    assert "mlflow run" not in shown
    assert f"tensorboard --logdir {workdir / 'tensorboard'}" in shown


def test_an_interrupted_run_continues_the_same_mlflow_run(
    tmp_path: Path, mlflow_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed mid-training resumes in its workdir: MLflow sees one run, not two."""
    from mlflow import MlflowClient

    from recipes.training.tracking.session import tracking_session

    experiment = f"reg-resume-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    client = MlflowClient(mlflow_url)
    with pytest.raises(KeyboardInterrupt), tracking_session(
            ("mlflow",), tmp_path, "m", "sha256:" + "ab" * 32) as first:
        assert first.report_to == ["mlflow"] and first.mlflow_run is not None
        raise KeyboardInterrupt
    assert first.mlflow_run is not None
    run_id = first.mlflow_run.run_id
    assert client.get_run(run_id).info.status == "KILLED"

    with tracking_session(("mlflow",), tmp_path, "m", "sha256:" + "ab" * 32) as second:
        assert second.mlflow_run is not None and second.mlflow_run.run_id == run_id
        assert client.get_run(run_id).info.status == "RUNNING"
        second.finish({"test.loss": 1.5, "nan": float("nan")}, "sha256:" + "cd" * 32)
    done = client.get_run(run_id)
    assert done.info.status == "FINISHED"
    assert done.data.metrics == {"test.loss": 1.5}
    assert done.data.tags["reg.artifact_digest"] == "sha256:" + "cd" * 32
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None and len(client.search_runs([exp.experiment_id])) == 1
    assert second.warnings == []
