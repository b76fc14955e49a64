"""A real MLflow tracking server for tests, on loopback, with a SQLite backend.

Started from this environment's ``mlflow`` (the ``tracking`` extra), one worker, its
output in a log file (MLflow's start-up migrations print a lot). Usage from a fixture::

    url, stop = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    try:
        yield url
    finally:
        stop()
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.services import free_port, wait_answering


def mlflow_command() -> Path | None:
    """The ``mlflow`` script beside this interpreter, or None when mlflow is not installed."""
    script = Path(sys.executable).with_name("mlflow")
    return script if script.is_file() else None


def start_mlflow(root: Path, *, timeout_s: float = 120.0) -> tuple[str, Callable[[], None]]:
    """Start ``mlflow server`` on 127.0.0.1 and a free port, its runs in ``root/mlflow.db``.

    Returns ``(url, stop)``: its base URL once ``/health`` answers, and a function that
    stops the server (its whole process group: the server forks its workers). Raises
    FileNotFoundError when mlflow is not installed.
    """
    script = mlflow_command()
    if script is None:
        raise FileNotFoundError("mlflow not found beside the interpreter")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "mlflow-server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(script), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""})

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root / "artifacts", ignore_errors=True)

    wait_answering(proc, url + "/health", "mlflow server", log_path, stop, timeout_s)
    return url, stop
