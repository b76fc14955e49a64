"""Shared setup for the serving benchmarks: a registry with real adapters, `reg serve`.

Not a benchmark itself. Builds the tiny Llama, trains two keyword adapters
(real training, seconds), registers them in a fresh SQLite registry, promotes
v1 to production and v2 to canary, and starts `reg serve` as its own process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = str(ROOT / ".venv" / "bin" / "python")
MODEL = "support-bot"
ADMIN_TOKEN = "bench"  # `reg serve`'s admin token here


def this_tree() -> dict[str, str]:
    """PYTHONPATH for child processes: this checkout's code first, whatever the virtual
    environment's editable install points at (a bench run from a snapshot measures it)."""
    rest = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(ROOT) + (os.pathsep + rest if rest else "")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 5.0, token: str | None = None) -> Any:
    req = urllib.request.Request(url)
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_ready(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            get_json(url + "/ready")
            return
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def build_registry(home: Path, *, base_model_path: str | None = None,
                   cache: Path | None = None, database_url: str | None = None) -> None:
    """Tiny model + two trained adapters, registered and promoted (v1 prod, v2 canary).

    With ``cache``, the model and the adapters are made there once and reused by every
    registry built with the same cache (each registry registers its own copy). With
    ``database_url`` the registry's database is that one (PostgreSQL), else ``home``'s
    SQLite file."""
    import shutil

    from recipes.artifact import read_manifest, write_manifest
    from recipes.scaffold.example import write_example_workspace
    from recipes.scaffold.tiny_model import build_tiny_llama
    from registry.api import Registry
    from registry.settings import Settings
    from tests.support.adapters import train_keyword_adapter

    where = cache or home
    model_dir = where / "tiny-llama"
    if not model_dir.exists():
        build_tiny_llama(model_dir)
    workspace = where / "workspace"
    if not workspace.exists():
        write_example_workspace(workspace, model_from=model_dir)
    settings = Settings.for_home(home)
    if database_url is not None:
        settings = Settings(home, database_url, settings.artifact_store)
    reg = Registry(settings)
    try:
        for kw in ("alpha", "bravo"):
            trained = where / "trained" / kw / "artifact"
            if not trained.exists():
                made = train_keyword_adapter(workspace, where / "trained" / kw, keyword=kw)
                if made != trained:
                    shutil.copytree(made, trained)
            out = home / "registered" / kw
            shutil.copytree(trained, out)
            if base_model_path is not None:  # serve it on another engine (the echo backend)
                ident = read_manifest(out)["identity"]
                (out / "manifest.json").unlink()
                write_manifest(out, {**ident, "base_model_path": base_model_path})
            reg.register(out)
        reg.promote(MODEL, 1, "production")
        reg.promote(MODEL, 2, "canary")
        reg.set_traffic(MODEL, {"production": 80, "canary": 20})
    finally:
        reg.close()


@contextlib.contextmanager
def reg_serve(home: Path, env: dict[str, str] | None = None,
              timeout: float = 300.0) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`reg serve` on a free port, as its own process; stopped with SIGTERM at the end."""
    port = free_port()
    full_env = {**os.environ, **this_tree(), "REG_HOME": str(home),
                "REG_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
    log = (home / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen([PY, "-m", "reg_cli.main", "serve", "--port", str(port),
                             "--log-level", "warning", "--max-concurrency", "512"],
                            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def admin_request(url: str, method: str, path: str, body: Any = None,
                  timeout: float = 30.0) -> Any:
    """A call to the gateway's admin API (``/admin/...``) with the bench's token; its JSON."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {ADMIN_TOKEN}")
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def reg_cli(home: Path, *args: str, cwd: Path | None = None,
            timeout: float = 1800.0) -> subprocess.CompletedProcess[str]:
    """``reg ARGS`` as its own process against ``home``; raises with its output if it fails."""
    env = {**os.environ, **this_tree(), "REG_HOME": str(home), "REG_ADMIN_TOKEN": ADMIN_TOKEN,
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cp = subprocess.run([PY, "-m", "reg_cli.main", *args], cwd=cwd or ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
    if cp.returncode != 0:
        raise RuntimeError(f"`reg {' '.join(args)}` exited {cp.returncode}:\n"
                           f"{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}")
    return cp


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
