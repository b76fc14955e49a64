"""Names every layer agrees on: models, stages, versions in the engine, servable adapters.

Import-free on purpose (the standard library only), so the registry's commands,
the gateway's hot path and the recipe schema share one rule without building
the schema's pydantic models. Each rule is a pattern plus a function that says
what is wrong with a name, so callers raise their own error type with the fix.
"""

from __future__ import annotations

import re

MODEL_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
STAGE_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"

PRODUCTION = "production"
STAGING = "staging"
CANARY = "canary"
STANDARD_STAGES = (PRODUCTION, STAGING, CANARY)

# vLLM's --max-lora-rank accepts only these values.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# PEFT methods whose adapters vLLM's multi-LoRA engine loads; the others (dora, ia3,
# prefix and prompt tuning, full) need `reg export --merged` and an engine of their own.
VLLM_SERVABLE_METHODS = frozenset({"lora", "qlora"})

_MODEL_RE = re.compile(MODEL_NAME_PATTERN)
_STAGE_RE = re.compile(STAGE_NAME_PATTERN)
_VERSION_SHAPED = re.compile(r"v[0-9]+")

MODEL_NAME_HINT = (
    "use lowercase letters, digits and '-', starting and ending with a letter or digit "
    "(at most 63 characters)"
)
STAGE_NAME_HINT = (
    f"use {', '.join(STANDARD_STAGES)} or a name of lowercase letters, digits and '-' "
    "(starting with a letter, at most 32 characters, not shaped like a version such as v2)"
)


def model_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a model, or None when it can."""
    if _MODEL_RE.fullmatch(name) is None:
        return f"{name!r} is not a valid model name"
    return None


def stage_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a stage, or None when it can.

    A stage shaped like a version (``v2``) is refused: ``M:v2`` and ``promote_to: v2``
    would read as a version reference.
    """
    if _STAGE_RE.fullmatch(name) is None or _VERSION_SHAPED.fullmatch(name):
        return f"{name!r} is not a valid stage name"
    return None


def adapter_name(model: str, version: int) -> str:
    """The engine's name for a version: never reused, so no cache serves stale weights."""
    return f"{model}@v{version}"


def vllm_serving_problem(method: str, rank: int | None) -> str | None:
    """Why vLLM's multi-LoRA engine cannot serve an adapter of ``method``/``rank``, or None."""
    if method not in VLLM_SERVABLE_METHODS:
        what = "a full fine-tune" if method == "full" else f"a {method} adapter"
        return (
            f"vLLM's multi-LoRA engine cannot serve {what} "
            f"(it serves {', '.join(sorted(VLLM_SERVABLE_METHODS))})"
        )
    if rank is not None and rank not in VLLM_LORA_RANKS:
        return f"vLLM serves LoRA ranks {list(VLLM_LORA_RANKS)} only, not r={rank}"
    return None
