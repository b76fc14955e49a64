"""Several processes per run: ``training.distributed.nproc_per_node`` through torchrun (DDP).

The calling process (``train``) keeps everything but the training loop, so the contract of
the in-process path holds unchanged:

1. ``train`` sets up, takes the workdir lock and claims the workdir, as for one process;
2. :func:`train_distributed` writes the launch file (the recipe's text, the identity) and
   starts ``python -m recipes.training.distributed agent FILE``, which sets its parent-death
   signal and runs torchrun (``torch.distributed.run``, standalone rendezvous on loopback,
   no restarts) in-process. The agent inherits the lock's file descriptor, so the workdir
   stays locked while any of it runs;
3. torchrun starts N workers (``... worker FILE``), each of which re-validates the recipe
   text, sets up the same data and seed, and trains with the Trainer's DDP (gloo on CPU,
   NCCL on CUDA). Only rank 0 writes: the step log, the checkpoints and ``final/``;
4. back in ``train``, evaluation, probes and the artifact are made in the calling process
   from ``final/``, as after an in-process run that was interrupted after training.

A rank that dies makes torchrun stop the others and exit non-zero (it watches its workers
every ``MONITOR_INTERVAL_S``); :func:`train_distributed` then raises a :class:`RegError`
with the tail of the workers' output, which the reconciler records as a failed run. A
killed caller takes the agent with it (SIGTERM by the parent-death signal; torchrun stops
its workers), and a killed agent its workers (SIGKILL), so no orphan keeps writing into a
workdir whose lock was released.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from recipes.core.errors import RegError
from recipes.core.fsutil import atomic_write_text

LAUNCH_FILE = ".tmp-distributed-launch.json"  # a .tmp-* file: clean_temporaries removes it
MONITOR_INTERVAL_S = 0.5
TAIL_BYTES = 16_000
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_MODULE = "recipes.training.distributed"  # not __name__: run as a script it is __main__


def backend(device: str) -> str:
    """The process group's backend: NCCL between GPUs, gloo on CPU. Pure."""
    return "nccl" if device == "cuda" else "gloo"


def device_problem(nproc: int, device: str, *, cuda_devices: int, cpus: int) -> str | None:
    """Why ``nproc`` processes cannot train on this machine, or None. Pure."""
    if device == "cuda" and nproc > cuda_devices:
        return (f"training.distributed.nproc_per_node is {nproc} but this machine has "
                f"{cuda_devices} CUDA device(s); NCCL needs one per process")
    if device == "cpu" and nproc > cpus:
        return (f"training.distributed.nproc_per_node is {nproc} but this process may use "
                f"{cpus} CPU core(s); more processes than cores only wait on each other")
    return None


def torchrun_args(nproc: int, launch_file: Path) -> list[str]:
    """torchrun's command line for the workers. Pure.

    ``--standalone``: a rendezvous on loopback with a free port (several runs at once do
    not collide); ``--max-restarts 0``: a failed rank fails the run, which the reconciler
    retries with backoff and resumes from the newest checkpoint."""
    return ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
            f"--monitor-interval={MONITOR_INTERVAL_S}",
            "-m", _MODULE, "worker", str(launch_file)]


def train_distributed(loaded: Any, workdir: Path, identity: dict[str, Any], *, nproc: int,
                      device: str, progress: bool, lock_fd: int) -> None:
    """Train ``loaded`` with ``nproc`` processes until ``workdir/final`` is written.

    The caller holds the workdir lock on ``lock_fd``. Raises :class:`RegError` with the
    workers' last output when the launch fails."""
    import torch

    problem = device_problem(nproc, device, cuda_devices=torch.cuda.device_count(),
                             cpus=len(os.sched_getaffinity(0)))
    if problem is not None:
        raise RegError(problem, hint="lower training.distributed.nproc_per_node, or train on "
                       "a machine with more devices")
    launch = workdir / LAUNCH_FILE
    atomic_write_text(launch, json.dumps({
        "path": str(loaded.path), "text": loaded.text, "workspace": str(loaded.workspace),
        "workdir": str(workdir), "identity": identity, "progress": progress,
    }) + "\n")
    cmd = [sys.executable, "-m", _MODULE, "agent", str(os.getpid()), str(nproc), str(launch)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, pass_fds=(lock_fd,),
                            start_new_session=True)
    assert proc.stdout is not None
    tail: collections.deque[bytes] = collections.deque()
    pump = threading.Thread(target=_pump, args=(proc.stdout, tail), daemon=True)
    pump.start()
    try:
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        pump.join(timeout=10)
        launch.unlink(missing_ok=True)
    if code != 0:
        text = b"".join(tail).decode("utf-8", errors="replace")
        raise RegError(
            f"distributed training ({nproc} processes, {backend(device)}) failed: torchrun "
            f"exited with {_exit_text(code)}; the workers' last output:\n{text.strip()}",
            hint="the failing rank's traceback is above; the next attempt resumes from the "
            "newest checkpoint")


def _exit_text(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"


def _pump(stream: IO[bytes], tail: collections.deque[bytes]) -> None:
    """Copy the workers' output to our stderr (progress, warnings) and keep its tail. It
    reads to the end whatever happens to the copy: a full pipe would stall the workers."""
    size = 0
    for chunk in iter(lambda: stream.read1(4096), b""):  # type: ignore[attr-defined]
        try:
            out = getattr(sys.stderr, "buffer", None)
            if out is not None:
                out.write(chunk)
                out.flush()
            else:  # a stderr replaced by a text-only stream
                sys.stderr.write(chunk.decode("utf-8", errors="replace"))
        except (OSError, ValueError):  # closed or gone: keep the tail only
            pass
        tail.append(chunk)
        size += len(chunk)
        while size > TAIL_BYTES and len(tail) > 1:
            size -= len(tail.popleft())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the agent's whole session: torchrun stops its workers on SIGTERM."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _die_with_parent(sig: signal.Signals, parent: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies. prctl has no wrapper
    in Python's standard library, and one call does not warrant a dependency."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:  # it died before the call above
        os.kill(os.getpid(), sig)


def _agent(caller: int, nproc: int, launch_file: Path) -> int:
    from torch.distributed import run as torchrun

    _die_with_parent(signal.SIGTERM, caller)
    args = torchrun.get_args_parser().parse_args(torchrun_args(nproc, launch_file))
    launch: Any = torchrun.run  # untyped
    try:
        launch(args)
    except Exception as e:  # ChildFailedError: torchrun printed which rank failed and why
        print(f"torchrun: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


def _loaded(spec: dict[str, Any], validate: Any) -> Any:
    loaded, problems = validate(Path(spec["path"]), spec["text"], Path(spec["workspace"]))
    if loaded is None:
        raise RegError("the recipe handed to the workers does not validate: "
                       + "; ".join(str(p) for p in problems))
    return loaded


def _worker(launch_file: Path) -> None:
    from torch.distributed.elastic.multiprocessing.errors import record

    from recipes.loading.validate import validate_document
    from recipes.training.entry import train_rank

    _die_with_parent(signal.SIGKILL, os.getppid())
    spec = json.loads(launch_file.read_text(encoding="utf-8"))
    loaded = _loaded(spec, validate_document)
    rank = int(os.environ["RANK"])
    import torch

    if torch.cuda.is_available():  # "cuda" below means this rank's device
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))

    @record  # the failing rank's traceback goes into torchrun's error summary
    def main() -> None:
        train_rank(loaded, Path(spec["workdir"]), spec["identity"],
                   progress=bool(spec["progress"]) and rank == 0, rank=rank)

    main()


if __name__ == "__main__":
    if sys.argv[1] == "agent":
        sys.exit(_agent(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])))
    _worker(Path(sys.argv[2]))
