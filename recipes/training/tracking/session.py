"""The trackers of one training attempt: the MLflow run reg opens and ends around the Trainer,
and TensorBoard's folder (the lifecycle: the package's docstring).

Why reg opens the MLflow run rather than leaving it to transformers' MLflowCallback: the
run's id must be known to tag it with the version after registration, an interrupted run
that resumes must continue the same MLflow run, and a server that does not answer must
cost a warning, not the trained version. The callback then finds the run active and logs
its params and step metrics into it, as it would into any run its user had started.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.integrations.integration_utils import MLflowCallback, TensorBoardCallback

from recipes.core.errors import RegError
from recipes.core.fsutil import atomic_write_text
from recipes.training.tracking.client import reachable
from recipes.training.tracking.record import (
    TAG_DIGEST,
    TENSORBOARD_DIR,
    TRACKING_EXTRA,
    WORKDIR_FILE,
    MlflowRun,
    TrackingRecord,
    public_uri,
    run_name,
    start_tags,
    tracker_problem,
)

log = logging.getLogger("reg.tracking")


class GuardedCallback(TrainerCallback):
    """A tracker's callback (transformers' MLflowCallback) whose first failure becomes a
    warning instead of a failed training run; it is called no more after that."""

    def __init__(self, inner: TrainerCallback, on_error: Callable[[BaseException], None]) -> None:
        self.inner = inner
        self._on_error = on_error
        self._failed = False

    def _call(self, hook: str, args: Any, state: Any, control: Any, kwargs: Any) -> None:
        if self._failed:
            return
        try:
            getattr(self.inner, hook)(args, state, control, **kwargs)
        # MLflow raises its own errors, requests' and SQLAlchemy's: none may stop training.
        except Exception as e:
            self._failed = True
            self._on_error(e)

    # The handler passes everything but args, state and control by keyword (logs, model).
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._call("on_train_begin", args, state, control, kwargs)

    def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._call("on_log", args, state, control, kwargs)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._call("on_save", args, state, control, kwargs)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._call("on_train_end", args, state, control, kwargs)


class TrackingSession:
    """The trackers a recipe names, for one attempt at training it in ``workdir``.

    ``report_to`` is what the Trainer gets: the recipe's trackers, less MLflow when its
    server cannot be reached. ``warnings`` says what was not recorded, and why.
    """

    def __init__(self, trackers: Sequence[str], workdir: Path, model: str,
                 spec_hash: str) -> None:
        self.trackers = tuple(trackers)
        self.workdir = workdir
        self.model = model
        self.spec_hash = spec_hash
        self.report_to: list[str] = list(self.trackers)
        self.warnings: list[str] = []
        self.mlflow_run: MlflowRun | None = None
        self.tensorboard_dir: Path | None = None
        self._mlflow_active = False

    # ---- start ---------------------------------------------------------------------------

    def start(self) -> None:
        """Check the trackers are installed, open the MLflow run, place TensorBoard's folder."""
        problem = tracker_problem(self.trackers)
        if problem is not None:
            raise RegError(problem, hint=TRACKING_EXTRA)
        if "tensorboard" in self.trackers:
            # transformers' own variable wins, as it would without reg.
            env = os.environ.get("TENSORBOARD_LOGGING_DIR")
            self.tensorboard_dir = (Path(env).expanduser() if env
                                    else self.workdir / TENSORBOARD_DIR)
        if "mlflow" in self.trackers:
            self._start_mlflow()

    def _start_mlflow(self) -> None:
        import mlflow

        uri = mlflow.get_tracking_uri()
        problem = reachable(uri)
        if problem is None:
            try:
                self.mlflow_run = self._open_run(uri)
            except Exception as e:  # see GuardedCallback
                problem = f"{type(e).__name__}: {e}"
        if problem is not None or self.mlflow_run is None:
            self._without_mlflow(f"MLflow at {public_uri(uri)} cannot be reached ({problem})")
            return
        self._mlflow_active = True
        atomic_write_text(self.workdir / WORKDIR_FILE,
                          json.dumps(self.record_json(), sort_keys=True) + "\n")

    def _open_run(self, uri: str) -> MlflowRun:
        """The run of an earlier attempt in this workdir, reattached, or a new one."""
        import mlflow

        run = None
        earlier = self._earlier_run(uri)
        if earlier is not None:
            with contextlib.suppress(Exception):  # deleted since: a new run
                run = mlflow.start_run(run_id=earlier.run_id)
        if run is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
            # Without the variable, MLflow's own choice (MLFLOW_EXPERIMENT_ID, else Default).
            experiment_id = _experiment_id(name) if name else None
            run = mlflow.start_run(experiment_id=experiment_id,
                                   run_name=run_name(self.model, self.spec_hash),
                                   tags=start_tags(self.model, self.spec_hash))
        return MlflowRun(tracking_uri=public_uri(uri), experiment_id=run.info.experiment_id,
                         run_id=run.info.run_id, run_name=run.info.run_name or "")

    def _earlier_run(self, uri: str) -> MlflowRun | None:
        path = self.workdir / WORKDIR_FILE
        try:
            stored = TrackingRecord.parse(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            return None
        run = stored.mlflow if stored is not None else None
        return run if run is not None and run.tracking_uri == public_uri(uri) else None

    def _without_mlflow(self, why: str) -> None:
        if "mlflow" in self.report_to:
            self.report_to.remove("mlflow")
        self._warn(f"{why}: training goes on without MLflow, and the version is registered "
                   "all the same")

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)

    # ---- the Trainer ---------------------------------------------------------------------

    def configure(self, trainer: Any) -> None:
        """Once the Trainer is built: its MLflow callback guarded, TensorBoard's folder set."""
        for callback in list(trainer.callback_handler.callbacks):
            if isinstance(callback, MLflowCallback):
                trainer.remove_callback(callback)
                trainer.add_callback(GuardedCallback(callback, self._lost_mlflow))
            elif isinstance(callback, TensorBoardCallback) and self.tensorboard_dir is not None:
                callback.logging_dir = str(self.tensorboard_dir)

    def _lost_mlflow(self, error: BaseException) -> None:
        run = self.mlflow_run.run_id if self.mlflow_run is not None else "?"
        self._warn(f"MLflow stopped answering during training ({type(error).__name__}: "
                   f"{error}): run {run} lacks what came after; training goes on")

    # ---- the end -------------------------------------------------------------------------

    def finish(self, metrics: Mapping[str, float], artifact_digest: str) -> None:
        """Log the evaluation's metrics and the artifact digest on the run, and end it."""
        if not self._mlflow_active:
            return
        import mlflow

        try:
            mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
            mlflow.set_tags({TAG_DIGEST: artifact_digest})
        except Exception as e:  # see GuardedCallback
            self._warn(f"MLflow did not take the evaluation metrics ({type(e).__name__}: {e})")
        self.end("FINISHED")

    def end(self, status: str) -> None:
        """End the MLflow run (repeatable); MLflow's own link line is kept off stdout."""
        if not self._mlflow_active:
            return
        self._mlflow_active = False
        import mlflow

        try:
            # mlflow writes "View run ... at: <url>" to stdout as a run ends; reg's own
            # output (`reg show`) carries the link.
            with contextlib.redirect_stdout(io.StringIO()):
                mlflow.end_run(status)
        except Exception as e:  # see GuardedCallback
            run = self.mlflow_run.run_id if self.mlflow_run is not None else "?"
            self._warn(f"MLflow did not end run {run} ({type(e).__name__}: {e})")

    def record(self) -> TrackingRecord | None:
        """Where this run reported to, for the artifact's manifest; None when nowhere."""
        record = TrackingRecord(
            mlflow=self.mlflow_run,
            tensorboard_dir=str(self.tensorboard_dir) if self.tensorboard_dir else None)
        return None if record.empty else record

    def record_json(self) -> dict[str, Any]:
        record = self.record()
        return record.to_json() if record is not None else {}


def _experiment_id(name: str) -> str:
    """The experiment named ``name``, created when missing, as transformers' callback does
    (but through the client: ``set_experiment`` logs an INFO line on stderr as it creates)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:  # created meanwhile by another trainer
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


@contextlib.contextmanager
def tracking_session(trackers: Sequence[str], workdir: Path, model: str,
                     spec_hash: str) -> Iterator[TrackingSession]:
    """A started :class:`TrackingSession`; its MLflow run ends FAILED when training raises
    (KILLED when interrupted), FINISHED otherwise."""
    session = TrackingSession(trackers, workdir, model, spec_hash)
    session.start()
    try:
        yield session
    except KeyboardInterrupt:
        session.end("KILLED")
        raise
    except BaseException:
        session.end("FAILED")
        raise
    session.end("FINISHED")
