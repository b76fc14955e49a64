"""Crash-safe, pickle-free training checkpoints.

A checkpoint is ``workdir/checkpoint-N/``; it is written as
``workdir/.tmp-checkpoint-N-PID/``, every file fsynced, then renamed into
place, so a directory with the final name is always complete. Old ones are
renamed away before they are deleted, for the same reason.

transformers' Trainer saves optimizer, scheduler and RNG states with
``torch.save`` (pickles) and writes ``training_args.bin``; reg never writes
or loads pickles, so :class:`SafeCheckpointMixin` replaces those four methods
with safetensors (tensors) + JSON (everything else). The encoding is a small
hand-written walk over the state dicts because no library serialises
optimizer state without pickle.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.core.fsutil import publish_dir, remove_dir

if TYPE_CHECKING:
    import torch

CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


# ---- state dicts as safetensors + JSON -------------------------------------------------


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        return {"__dict__": [
            [_encode(k, f"{path}.k{i}", tensors), _encode(v, f"{path}.{i}", tensors)]
            for i, (k, v) in enumerate(obj.items())
        ]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} at {path} without pickle")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    import numpy as np

    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    return obj


def save_state(obj: Any, directory: Path, name: str) -> None:
    """Write ``name.safetensors`` (every tensor) and ``name.json`` (the rest)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(obj, "s", tensors)
    save_file(tensors, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps(encoded), encoding="utf-8")


def load_state(directory: Path, name: str) -> Any:
    from safetensors.torch import load_file

    tensors = load_file(str(directory / f"{name}.safetensors"))
    encoded = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    return _decode(encoded, tensors)


def rng_states() -> dict[str, Any]:
    import numpy as np
    import torch

    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.random.set_rng_state_all(states["cuda"])


# ---- directories ------------------------------------------------------------------------


def clean_temporaries(workdir: Path) -> None:
    """Remove what a killed run left half-written (``.tmp-*`` folders and files)."""
    if not workdir.is_dir():
        return
    for p in workdir.iterdir():
        if p.name.startswith(".tmp"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def list_checkpoints(workdir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not workdir.is_dir():
        return []
    out: list[tuple[int, Path]] = []
    for p in workdir.iterdir():
        m = _CHECKPOINT_RE.match(p.name)
        if m and p.is_dir() and (p / TRAINER_STATE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def newest_checkpoint(workdir: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(workdir)
    return found[-1] if found else None


def rotate_checkpoints(workdir: Path, keep: int) -> None:
    for _step, path in list_checkpoints(workdir)[:-keep]:
        remove_dir(path)


# ---- the Trainer mixin ------------------------------------------------------------------


class SafeCheckpointMixin:
    """Trainer methods replaced so that checkpoints are atomic and pickle-free.

    Mixed in before ``transformers.Trainer`` (or a trl subclass of it); relies
    on the Trainer attributes ``args``, ``state``, ``model``, ``optimizer``,
    ``lr_scheduler``, ``accelerator`` and ``callback_handler``.
    """

    keep_checkpoints: int = 2

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_callback import ExportableState

        t: Any = self
        workdir = Path(t.args.output_dir)
        step = t.state.global_step
        t.store_flos()  # a collective with several processes: every rank takes part
        if not t.args.should_save:  # of several processes, rank 0 writes (states are equal)
            return
        tmp = workdir / f".tmp-{CHECKPOINT_PREFIX}{step}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        unwrapped = t.accelerator.unwrap_model(t.model, keep_torch_compile=False)
        unwrapped.save_pretrained(str(tmp), safe_serialization=True)
        save_state(t.optimizer.state_dict(), tmp, "optimizer")
        save_state(t.lr_scheduler.state_dict(), tmp, "scheduler")
        save_state(rng_states(), tmp, "rng")
        for cb in [c for c in [*t.callback_handler.callbacks, t.control]
                   if isinstance(c, ExportableState)]:
            t.state.stateful_callbacks[cb.__class__.__name__] = cb.state()
        t.state.save_to_json(str(tmp / TRAINER_STATE))
        publish_dir(tmp, workdir / f"{CHECKPOINT_PREFIX}{step}")
        rotate_checkpoints(workdir, self.keep_checkpoints)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        t: Any = self
        path = Path(checkpoint)
        t.optimizer.load_state_dict(load_state(path, "optimizer"))
        t.lr_scheduler.load_state_dict(load_state(path, "scheduler"))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        restore_rng_states(load_state(Path(checkpoint), "rng"))

    def _load_scaler(self, checkpoint: str | None) -> None:
        # No gradient scaler state is ever written (fp16 scaler state would be
        # restarted on resume; documented in docs/training.md).
        return
