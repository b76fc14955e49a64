"""The learning rate for ``training.learning_rate: auto``.

A pure rule by adapter method, model size and data size, so `reg estimate`
can show what `reg train` will use. The anchors are the rates the PEFT and
trl documentation recommend for 7B-class models (LoRA 2e-4, full 2e-5,
IA3 3e-3, prompt/prefix tuning 3e-2 / 1e-2); smaller models tolerate larger
steps, so the rate grows with sqrt(7e9 / params) up to a cap. On the
project's tiny test model (0.6 M parameters) this gives LoRA 1e-2, the rate
measured to teach it a keyword in 40 steps (shared/PLATFORM.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from recipes.schema import AdapterMethod

# Rate at the reference size, per method.
_ANCHOR_LR: dict[AdapterMethod, float] = {
    AdapterMethod.lora: 2e-4,
    AdapterMethod.qlora: 2e-4,
    AdapterMethod.dora: 2e-4,
    AdapterMethod.ia3: 3e-3,
    AdapterMethod.prefix_tuning: 1e-2,
    AdapterMethod.prompt_tuning: 3e-2,
    AdapterMethod.full: 2e-5,
}
_REFERENCE_PARAMS = 7e9
# Cap on the size factor: beyond it small models diverge rather than learn faster.
_MAX_SIZE_FACTOR = 50.0
# Above this many training examples the run is long enough that a smaller rate
# reaches the same loss with less risk of forgetting.
_LARGE_DATASET = 10_000
_MAX_LR = 0.1


@dataclass(frozen=True)
class LrChoice:
    """The chosen rate and how it was derived (shown by `reg estimate`)."""

    learning_rate: float
    reason: str


# The usual range per method for 7B-class models: the rates the method's papers and the PEFT
# and trl documentation report. LoRA/QLoRA/DoRA: 1e-4..5e-4 in the LoRA, QLoRA (2e-4 at
# 7-13B, 1e-4 at 33-65B) and DoRA papers, widened one step each way; full fine-tuning: 1e-5..
# 5e-5 (Alpaca, Llama 2-Chat, Zephyr SFT: 2e-5), widened; IA3: 3e-3 in the T-Few paper;
# prefix tuning: 5e-5..8e-5 in Li & Liang (2021), 1e-2 in the PEFT guide; prompt tuning:
# 0.3 in Lester et al. (2021, Adafactor), 3e-2 in the PEFT guide. `reg doctor` scales both
# ends by the size factor the ``auto`` rule uses.
USUAL_LR_RANGE: dict[AdapterMethod, tuple[float, float]] = {
    AdapterMethod.lora: (1e-5, 1e-3),
    AdapterMethod.qlora: (1e-5, 1e-3),
    AdapterMethod.dora: (1e-5, 1e-3),
    AdapterMethod.ia3: (3e-4, 3e-2),
    AdapterMethod.prefix_tuning: (1e-5, 3e-2),
    AdapterMethod.prompt_tuning: (1e-3, 3e-1),
    AdapterMethod.full: (1e-6, 1e-4),
}


def size_factor(num_params: int) -> float:
    """How much larger a step a model of ``num_params`` takes than a 7B one (>= 1, capped)."""
    if num_params <= 0:
        raise ValueError(f"num_params must be positive (got {num_params})")
    return min(_MAX_SIZE_FACTOR, max(1.0, math.sqrt(_REFERENCE_PARAMS / num_params)))


def usual_lr_range(method: AdapterMethod, num_params: int | None) -> tuple[float, float]:
    """The usual learning rates of ``method`` for a model of ``num_params`` (7B-class when
    unknown): :data:`USUAL_LR_RANGE` scaled by :func:`size_factor`."""
    low, high = USUAL_LR_RANGE[method]
    size = 1.0 if num_params is None else size_factor(num_params)
    return low * size, high * size


def recommend_lr(method: AdapterMethod, num_params: int, num_examples: int) -> LrChoice:
    """The learning rate for ``auto``: anchor(method) x size factor x data factor."""
    if num_params <= 0:
        raise ValueError(f"num_params must be positive (got {num_params})")
    anchor = _ANCHOR_LR[method]
    size = size_factor(num_params)
    data = 1.0 if num_examples <= _LARGE_DATASET else 0.5
    lr = min(_MAX_LR, anchor * size * data)
    reason = (
        f"{method.value} anchor {anchor:g} x size factor {size:.3g} "
        f"(sqrt(7e9 / {num_params:,} params), capped at {_MAX_SIZE_FACTOR:g}) x data factor "
        f"{data:g} ({num_examples:,} examples)"
    )
    return LrChoice(float(f"{lr:.3g}"), reason)


def resolve_lr(
    setting: float | str, method: AdapterMethod, num_params: int, num_examples: int
) -> LrChoice:
    """The recipe's number as is, or the ``auto`` rule."""
    if setting == "auto":
        return recommend_lr(method, num_params, num_examples)
    if isinstance(setting, str):
        raise ValueError(f"learning_rate must be a number or 'auto' (got {setting!r})")
    return LrChoice(float(setting), "set in the recipe")
