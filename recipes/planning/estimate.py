"""Compute estimates for a recipe (seed: ComputeRequirements): memory and time per GPU.

The model's shape and parameter count are read from its config (the model
is instantiated on the ``meta`` device, so nothing is assumed and no weight
is read); token counts come from the recipe's real, cleaned data. The
arithmetic is pure and states its formulas (``FORMULAS``), which
`reg estimate` prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipes.schema import AdapterMethod, AdapterSpec, TrainingSpec

GIB = 1024**3
# Share of a GPU's peak dense bf16 throughput that fine-tuning typically reaches.
MFU = 0.35
RUNTIME_OVERHEAD_BYTES = 1 * GIB  # CUDA context, allocator slack, kernels

FORMULAS = [
    "weights = params x bytes/param (bf16: 2; QLoRA nf4 + double quant: 4.127 bits)",
    "full: + 14 bytes/param (bf16 gradients 2, fp32 master weights 4, Adam moments 8)",
    "adapters: + 16 bytes/trainable param (fp32 weights 4, gradients 4, Adam moments 8)",
    "activations/layer = seq x batch x hidden x (34 + 5 x heads x seq / hidden) bytes "
    "(Korthikanti et al. 2022); with gradient checkpointing 2 x seq x batch x hidden",
    "logits = 4 x batch x seq x vocab bytes (fp32 for the loss), twice (forward and gradient)",
    f"total = weights + optimizer state + activations + logits + {RUNTIME_OVERHEAD_BYTES // GIB} "
    "GiB runtime",
    f"time = 6 x params x training tokens / (GPU peak bf16 FLOP/s x MFU {MFU})",
]


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float
    bf16_tflops: float  # dense peak


GPUS: tuple[GPU, ...] = (
    GPU("T4", 16, 65),
    GPU("L4", 24, 121),
    GPU("A10G", 24, 70),
    GPU("RTX 4090", 24, 165),
    GPU("L40S", 48, 362),
    GPU("A100 40GB", 40, 312),
    GPU("A100 80GB", 80, 312),
    GPU("H100 80GB", 80, 989),
    GPU("H200", 141, 989),
)


@dataclass(frozen=True)
class ModelShape:
    num_params: int
    hidden: int
    layers: int
    heads: int
    vocab: int
    # (in_features, out_features) of every nn.Linear by its dotted name.
    linears: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class MemoryEstimate:
    method: str
    trainable_params: int
    weights: int
    optimizer: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return (self.weights + self.optimizer + self.activations + self.logits
                + RUNTIME_OVERHEAD_BYTES)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "trainable_params": self.trainable_params,
                "weights_bytes": self.weights, "optimizer_bytes": self.optimizer,
                "activations_bytes": self.activations, "logits_bytes": self.logits,
                "total_bytes": self.total}


def _targets(adapter: AdapterSpec, shape: ModelShape) -> list[tuple[str, int, int]]:
    names = [n for n in shape.linears if not n.endswith("lm_head")]
    if adapter.target_modules == "all-linear":
        chosen = names
    else:
        wanted = set(adapter.target_modules)
        chosen = [n for n in names if n.rsplit(".", 1)[-1] in wanted]
    return [(n, *shape.linears[n]) for n in chosen]


def trainable_params(adapter: AdapterSpec, shape: ModelShape,
                     method: AdapterMethod | None = None) -> int:
    """Parameters the method trains, from the model's real layer shapes. Pure."""
    m = method or adapter.method
    if m is AdapterMethod.full:
        return shape.num_params
    if m is AdapterMethod.prompt_tuning:
        return (adapter.num_virtual_tokens or 16) * shape.hidden
    if m is AdapterMethod.prefix_tuning:
        return (adapter.num_virtual_tokens or 16) * shape.layers * 2 * shape.hidden
    targets = _targets(adapter, shape)
    if m is AdapterMethod.ia3:
        ff = set(adapter.feedforward_modules or [])
        return sum(i if n.rsplit(".", 1)[-1] in ff else o for n, i, o in targets)
    lora = sum(adapter.r * (i + o) for _n, i, o in targets)
    if m is AdapterMethod.dora:
        lora += sum(o for _n, _i, o in targets)  # the magnitude vector
    return lora


def activation_bytes(t: TrainingSpec, shape: ModelShape, checkpointing: bool) -> int:
    s, b, h = t.max_seq_length, t.batch_size, shape.hidden
    if checkpointing:
        per_layer = 2 * s * b * h
        one_layer = s * b * h * (34 + 5 * shape.heads * s / h)
        return int(per_layer * shape.layers + one_layer)
    return int(s * b * h * (34 + 5 * shape.heads * s / h) * shape.layers)


def memory_estimate(method: AdapterMethod, adapter: AdapterSpec, t: TrainingSpec,
                    shape: ModelShape, *, checkpointing: bool) -> MemoryEstimate:
    """Training memory on a GPU in bf16 for one method. Pure."""
    trainable = trainable_params(adapter, shape, method)
    if method is AdapterMethod.qlora:
        weights = int(shape.num_params * 4.127 / 8)
    else:
        weights = shape.num_params * 2
    optimizer = trainable * (14 if method is AdapterMethod.full else 16)
    logits = 2 * 4 * t.batch_size * t.max_seq_length * shape.vocab
    return MemoryEstimate(method.value, trainable, weights, optimizer,
                          activation_bytes(t, shape, checkpointing), logits)


def training_seconds(num_params: int, tokens: int, gpu: GPU) -> float:
    return 6 * num_params * tokens / (gpu.bf16_tflops * 1e12 * MFU)


def training_tokens(t: TrainingSpec, train_tokens: int, train_examples: int) -> int:
    """Tokens the run will process: max_steps x batch x mean length, else epochs x data."""
    if train_examples == 0:
        return 0
    mean = train_tokens / train_examples
    if t.max_steps is not None:
        return int(t.max_steps * t.batch_size * t.gradient_accumulation_steps * mean)
    return int(t.epochs * train_tokens)


@dataclass(frozen=True)
class GpuFit:
    gpu: GPU
    fits: dict[str, bool]
    hours: float

    def to_json(self) -> dict[str, Any]:
        return {"gpu": self.gpu.name, "memory_gib": self.gpu.memory_gib,
                "bf16_tflops": self.gpu.bf16_tflops, "fits": self.fits, "hours": self.hours}


@dataclass(frozen=True)
class Estimate:
    model: str
    num_params: int
    shape: ModelShape
    method: str
    tokens: int
    learning_rate: float
    learning_rate_reason: str
    memory: list[MemoryEstimate]
    gpus: list[GpuFit]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "num_params": self.num_params,
            "hidden": self.shape.hidden, "layers": self.shape.layers,
            "heads": self.shape.heads, "vocab": self.shape.vocab,
            "method": self.method,
            "training_tokens": self.tokens,
            "learning_rate": self.learning_rate,
            "learning_rate_reason": self.learning_rate_reason,
            "memory": [m.to_json() for m in self.memory],
            "gpus": [g.to_json() for g in self.gpus],
            "formulas": FORMULAS,
        }


def compare(adapter: AdapterSpec, t: TrainingSpec, shape: ModelShape, tokens: int, *,
            checkpointing: bool) -> tuple[list[MemoryEstimate], list[GpuFit]]:
    """Memory of full / LoRA / QLoRA (and the recipe's method) and each GPU's fit. Pure."""
    methods = [AdapterMethod.full, AdapterMethod.lora, AdapterMethod.qlora]
    if adapter.method not in methods:
        methods.append(adapter.method)
    memory = [memory_estimate(m, adapter, t, shape, checkpointing=checkpointing) for m in methods]
    fits = [
        GpuFit(gpu, {m.method: m.total <= gpu.memory_gib * GIB for m in memory},
               training_seconds(shape.num_params, tokens, gpu) / 3600)
        for gpu in GPUS
    ]
    return memory, fits


def read_shape(model_dir: Path, trust_remote_code: bool) -> ModelShape:
    """The model's shape from its config, instantiated on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code,
                                        local_files_only=True)
    auto: Any = AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config, trust_remote_code=trust_remote_code)
    linears = {n: (m.in_features, m.out_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear)}
    text = getattr(config, "text_config", None) or config
    return ModelShape(
        num_params=sum(p.numel() for p in model.parameters()),
        hidden=int(text.hidden_size),
        layers=int(text.num_hidden_layers),
        heads=int(text.num_attention_heads),
        vocab=int(text.vocab_size),
        linears=linears,
    )


def estimate(loaded: Any) -> Estimate:
    """Estimate the recipe's training on common GPUs from its model config and real data."""
    from recipes.data.pipeline import prepare_data
    from recipes.training.lr import resolve_lr
    from recipes.training.model import load_tokenizer

    spec = loaded.recipe.spec
    model_dir = loaded.base_model_path
    shape = read_shape(model_dir, spec.base_model.trust_remote_code)
    data = prepare_data(loaded, load_tokenizer(spec.base_model, model_dir))
    stats = data.report.splits["train"]
    tokens = training_tokens(spec.training, stats.tokens, stats.examples)
    checkpointing = spec.training.gradient_checkpointing
    use_ckpt = (shape.num_params >= 1_000_000_000 if checkpointing == "auto"
                else bool(checkpointing))
    memory, gpus = compare(spec.adapter, spec.training, shape, tokens, checkpointing=use_ckpt)
    lr = resolve_lr(spec.training.learning_rate, spec.adapter.method, shape.num_params,
                    stats.examples)
    return Estimate(str(spec.base_model.path), shape.num_params, shape,
                    spec.adapter.method.value, tokens, lr.learning_rate, lr.reason, memory, gpus)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def human_hours(hours: float) -> str:
    seconds = hours * 3600
    if seconds < 1:
        return "<1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if hours < 2:
        return f"{seconds / 60:.0f} min"
    return f"{hours:.1f} h" if math.isfinite(hours) else "-"
