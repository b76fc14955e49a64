"""The MLflow calls reg makes outside the Trainer: is the server there, and the version's tags
set on the run once registration knows the version.

mlflow is imported inside the functions: registering a version that no MLflow run trained
never imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

from recipes.artifact import read_manifest
from recipes.core.errors import RegError
from recipes.core.names import adapter_name
from recipes.training.tracking.record import MlflowRun, TrackingRecord, public_uri, version_tags

REACH_TIMEOUT_S = 5.0


def reachable(uri: str, timeout_s: float = REACH_TIMEOUT_S) -> str | None:
    """None when the tracking server at ``uri`` answers; otherwise why it does not.

    MLflow's own client retries a dead server with backoff for minutes before it fails; one
    short request first lets reg warn and go on instead. A local store (``sqlite:``,
    ``file:``) has no server: its errors come at once, from the call itself.
    """
    if not uri.startswith(("http://", "https://")):
        return None
    import httpx

    try:
        answer = httpx.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"
    # Any answer but a server error will do: a managed server may have no /health route.
    if answer.status_code >= 500:
        return f"HTTP {answer.status_code} from {public_uri(uri)}/health"
    return None


def client_uri(run: MlflowRun) -> str:
    """The URI to reach ``run`` with: the environment's when it names the same server (it may
    carry credentials the stored, public one does not), else the stored one."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return env if env and public_uri(env) == run.tracking_uri else run.tracking_uri


def tag_registered(artifact_dir: Path, *, model: str, number: int, digest: str | None,
                   status: str) -> str | None:
    """Tag the MLflow run that trained the artifact in ``artifact_dir`` with the version it
    was registered as; a warning when that fails (never an error: the version stands).

    Nothing to do (and mlflow not imported) when the manifest records no MLflow run.
    Idempotent (tags are set, not added), so registering the same artifact again retries.
    """
    try:
        record = TrackingRecord.from_manifest(read_manifest(artifact_dir))
    except RegError as e:
        return f"the MLflow run of {adapter_name(model, number)} is unknown: {e}"
    run = record.mlflow if record is not None else None
    if run is None:
        return None
    uri = client_uri(run)
    problem = reachable(uri)
    if problem is None:
        try:
            from mlflow import MlflowClient
            from mlflow.entities import RunTag

            tags = version_tags(model, number, digest, status)
            MlflowClient(tracking_uri=uri).log_batch(
                run.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            return None
        # MLflow raises its own errors, requests' and SQLAlchemy's: none may cost the version.
        except Exception as e:
            problem = f"{type(e).__name__}: {e}"
    return (f"MLflow run {run.run_id} at {run.tracking_uri} was not tagged with "
            f"{adapter_name(model, number)} ({problem}); the version is registered all the "
            f"same, and `reg show {model} v{number}` links the run")
