"""Peak live tensor memory of a block of work, measured on any device (CPU included).

CUDA has ``torch.cuda.max_memory_allocated``; the CPU allocator keeps no such count, and the
process's RSS mixes tensors with the Python heap, libraries and allocator slack. This mode
sees every tensor an operator reads or writes (a ``TorchDispatchMode``, the mechanism of
torch's own ``torch.distributed._tools.mem_tracker.MemTracker``) and counts each distinct
storage's bytes from the first time it is seen until it is freed (a weak reference's
callback), keeping the peak of the sum. Tensors that exist before the block (the model's
weights) count from their first use, which is the first forward pass, before any peak of a
training step. MemTracker itself is not used: it installs gradient hooks on every parameter,
which fails on the frozen base weights of a PEFT model, and raises on a second iteration.
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakTensorMemory(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's mode
    """``with PeakTensorMemory() as m: ...``, then ``m.peak`` (bytes) and ``m.live``."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.live = 0
        self.peak = 0
        # storage key -> (bytes, weak reference whose callback subtracts them)
        self._seen: dict[int, tuple[int, weakref.ref[Any]]] = {}

    def _freed(self, key: int, _ref: weakref.ref[Any]) -> None:
        entry = self._seen.pop(key, None)
        if entry is not None:
            self.live -= entry[0]

    def _see(self, t: torch.Tensor) -> None:
        if t.device.type == "meta" or t.is_sparse or t.is_nested:
            return
        try:
            st = t.untyped_storage()
        except (NotImplementedError, RuntimeError):  # tensors without a plain storage
            return
        key = int(st._cdata)
        size = int(st.nbytes())
        entry = self._seen.get(key)
        if entry is not None:
            if entry[0] != size:  # resized in place
                self.live += size - entry[0]
                self._seen[key] = (size, entry[1])
            return
        ref = weakref.ref(st, partial(self._freed, key))
        self._seen[key] = (size, ref)
        self.live += size

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten((args, kwargs, out))[0]:
            if isinstance(value, torch.Tensor):
                self._see(value)
        self.peak = max(self.peak, self.live)
        return out
