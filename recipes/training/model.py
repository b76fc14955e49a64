"""Builders for training: device settings, the base model, the tokenizer, the PEFT config.

Each builder takes only the recipe fields it needs (torchtune's habit). The
decisions (``device_settings``, ``build_peft_config``) are pure; the loaders
do the I/O. Weights load from safetensors only, and ``trust_remote_code``
follows the recipe (off by default).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recipes.core.errors import ModelError, RegError
from recipes.schema import AdapterMethod, AdapterSpec, BaseModelSpec, TrainingSpec

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DeviceKind = Literal["cpu", "cuda"]
# Models above this size get gradient checkpointing on CUDA under `auto`.
_CHECKPOINTING_PARAMS = 1_000_000_000


class TrainingConfigError(RegError):
    """A training setting cannot work on this device or with this model."""


@dataclass(frozen=True)
class DeviceSettings:
    """What `auto` resolved to on this device; recorded in metrics.json."""

    device: DeviceKind
    precision: Literal["fp32", "bf16", "fp16"]
    gradient_checkpointing: bool
    dtype: Literal["float32", "bfloat16", "float16"]

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "precision": self.precision,
            "gradient_checkpointing": self.gradient_checkpointing,
            "dtype": self.dtype,
        }


def detect_device() -> DeviceKind:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_supported(device: DeviceKind) -> bool:
    if device != "cuda":
        return False
    import torch

    return bool(torch.cuda.is_bf16_supported())


def device_settings(
    training: TrainingSpec,
    base: BaseModelSpec,
    device: DeviceKind,
    *,
    num_params: int,
    bf16_ok: bool,
) -> DeviceSettings:
    """Resolve ``auto`` precision, dtype and gradient checkpointing. Pure.

    On CPU everything defaults to fp32 without checkpointing: bf16 autocast and
    recomputation made trl runs 7-25x slower there (shared/PLATFORM.md).
    """
    precision = training.precision
    if precision == "auto":
        precision = "fp32" if device == "cpu" else ("bf16" if bf16_ok else "fp16")
    if precision == "fp16" and device == "cpu":
        raise TrainingConfigError(
            "fp16 precision is not supported on CPU (training.precision: fp16)",
            hint="use training.precision: fp32 (or auto) on CPU",
        )
    if precision == "bf16" and device == "cuda" and not bf16_ok:
        raise TrainingConfigError(
            "this GPU has no bf16 support (training.precision: bf16)",
            hint="use training.precision: fp16 or auto",
        )
    checkpointing = training.gradient_checkpointing
    if checkpointing == "auto":
        checkpointing = device == "cuda" and num_params >= _CHECKPOINTING_PARAMS
    dtype: Literal["float32", "bfloat16", "float16"]
    if base.dtype != "auto":
        dtype = base.dtype
    elif device == "cpu" or precision == "fp32":
        # Master weights stay fp32 under mixed precision on CPU.
        dtype = "float32"
    else:
        # On CUDA the frozen base is stored in the compute dtype, halving memory.
        dtype = "bfloat16" if precision == "bf16" else "float16"
    return DeviceSettings(device, precision, bool(checkpointing), dtype)


def load_tokenizer(base: BaseModelSpec, model_dir: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            str(model_dir), trust_remote_code=base.trust_remote_code, local_files_only=True
        )
    except (OSError, ValueError) as e:
        raise ModelError(
            f"cannot load the tokenizer from {model_dir}: {e}",
            hint="the base model folder needs tokenizer files "
            "(tokenizer.json, tokenizer_config.json)",
        ) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _quantization_config(base: BaseModelSpec) -> Any:
    from transformers import BitsAndBytesConfig as _Bnb

    bnb: Any = _Bnb  # untyped constructor
    q = base.quantization
    if q is None:
        return None
    import torch

    compute = getattr(torch, q.compute_dtype)
    if q.bits == 4:
        return bnb(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=compute,
        )
    return bnb(load_in_8bit=True)


def load_base_model(
    base: BaseModelSpec, model_dir: Path, settings: DeviceSettings, *, quantize: bool = True
) -> PreTrainedModel:
    """The base causal LM from safetensors, optionally quantized by bitsandbytes.

    No forward pass runs here: a forward under ``torch.no_grad()`` on a 4-bit
    model before ``get_peft_model`` left every LoRA gradient at 0
    (shared/PLATFORM.md), so nothing touches the model before the adapter.
    """
    from transformers import AutoModelForCausalLM

    return load_pretrained(
        AutoModelForCausalLM, base, model_dir, settings, quantize=quantize,
        what="the base model",
        hint="point base_model.path at a Hugging Face model folder with *.safetensors weights")


def load_pretrained(auto: Any, base: BaseModelSpec, model_dir: Path, settings: DeviceSettings,
                    *, quantize: bool, what: str, hint: str,
                    **extra: Any) -> PreTrainedModel:
    """``auto.from_pretrained`` under reg's loading rules: safetensors only, local files only,
    remote code only if the recipe asks, the device's dtype, bitsandbytes when quantized."""
    import torch

    kwargs: dict[str, Any] = {
        **extra,
        "use_safetensors": True,
        "trust_remote_code": base.trust_remote_code,
        "local_files_only": True,
        "dtype": getattr(torch, settings.dtype),
    }
    qconfig = _quantization_config(base) if quantize else None
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = {"": 0} if settings.device == "cuda" else {"": "cpu"}
    try:
        model = auto.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load {what} from {model_dir}: {e}", hint=hint) from e
    if qconfig is None and settings.device == "cuda":
        model = model.to("cuda")
    loaded_model: PreTrainedModel = model
    return loaded_model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as their unpacked size."""
    trainable = 0
    total = 0
    for p in model.parameters():
        n = p.numel()
        # bitsandbytes packs 4-bit values into a storage tensor; its
        # quant_state keeps the logical shape.
        shape = getattr(getattr(p, "quant_state", None), "shape", None)
        if shape is not None:
            n = math.prod(shape)
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def build_peft_config(adapter: AdapterSpec, model_dir: Path) -> PeftConfig | None:
    """The PEFT config for the recipe's adapter; None for method ``full``. Pure."""
    from peft import (
        IA3Config,
        LoraConfig,
        PrefixTuningConfig,
        PromptTuningConfig,
        PromptTuningInit,
        TaskType,
    )

    m = adapter.method
    targets: list[str] | str = (
        adapter.target_modules if isinstance(adapter.target_modules, str)
        else list(adapter.target_modules)
    )
    if m in (AdapterMethod.lora, AdapterMethod.qlora, AdapterMethod.dora):
        lora: dict[str, Any] = {
            "task_type": TaskType.CAUSAL_LM,
            "r": adapter.r,
            "lora_alpha": adapter.alpha,  # peft types it int; a float scale works and is kept
            "lora_dropout": adapter.dropout,
            "target_modules": targets,
            "bias": adapter.bias,
            "use_rslora": adapter.use_rslora,
            "use_dora": m is AdapterMethod.dora,
            "modules_to_save": adapter.modules_to_save,
        }
        return LoraConfig(**lora)
    if m is AdapterMethod.ia3:
        ff = adapter.feedforward_modules
        return IA3Config(
            task_type=TaskType.CAUSAL_LM,
            target_modules=targets,
            feedforward_modules=list(ff) if ff is not None else [],
            modules_to_save=adapter.modules_to_save,
        )
    virtual = adapter.num_virtual_tokens or 0
    if not virtual and m in (AdapterMethod.prefix_tuning, AdapterMethod.prompt_tuning):
        raise TrainingConfigError(f"{m.value} needs adapter.num_virtual_tokens",
                                  hint="set adapter.num_virtual_tokens, e.g. 16")
    if m is AdapterMethod.prefix_tuning:
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=virtual)
    if m is AdapterMethod.prompt_tuning:
        if adapter.prompt_init_text:
            return PromptTuningConfig(
                task_type=TaskType.CAUSAL_LM,
                num_virtual_tokens=virtual,
                prompt_tuning_init=PromptTuningInit.TEXT,
                prompt_tuning_init_text=adapter.prompt_init_text,
                tokenizer_name_or_path=str(model_dir),
            )
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=virtual)
    return None


def attach_adapter(
    model: Any,
    adapter: AdapterSpec,
    model_dir: Path,
    settings: DeviceSettings,
    *,
    quantized: bool,
) -> Any:
    """Wrap the base in its PEFT adapter (or unfreeze it for ``full``).

    For k-bit bases, ``prepare_model_for_kbit_training`` casts norms to fp32
    and enables input gradients, as the QLoRA paper's recipe does.
    """
    from peft import get_peft_model
    from peft import prepare_model_for_kbit_training as _prepare

    prepare_model_for_kbit_training: Any = _prepare  # untyped
    if quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=settings.gradient_checkpointing
        )
    elif settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = build_peft_config(adapter, model_dir)
    if config is None:
        if quantized:
            raise TrainingConfigError(
                "adapter.method full cannot train a quantized base model",
                hint="remove base_model.quantization or use adapter.method qlora",
            )
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as e:
        raise TrainingConfigError(
            f"cannot attach a {adapter.method.value} adapter: {e}",
            hint="check adapter.target_modules against the model's module names "
            "(e.g. q_proj, v_proj, or all-linear)",
        ) from e
    return peft_model


def config_param_count(base: BaseModelSpec, model_dir: Path) -> int:
    """Exact parameter count from the model's config, without loading weights.

    The model is instantiated on the ``meta`` device (no memory, no weights
    read), so any architecture transformers knows is counted, not assumed.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(
            str(model_dir), trust_remote_code=base.trust_remote_code, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the model config in {model_dir}: {e}",
                         hint="point base_model.path at a folder with config.json") from e
    auto: Any = AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config, trust_remote_code=base.trust_remote_code)
    return sum(p.numel() for p in model.parameters())


# Below this size one CPU thread is fastest: the matrices are too small to
# split, and with 2 OpenMP threads on this 2-core machine, while other
# processes use the cores, a 128x128 linear took 3.5 ms instead of 0.18 ms
# (threads spin waiting for each other).
_SMALL_MODEL_PARAMS = 50_000_000
THREADS_ENV = "REG_TORCH_THREADS"


def cpu_threads_for(num_params: int, cpus: int, override: str | None = None) -> int:
    """Intra-op threads for CPU training: ``$REG_TORCH_THREADS``, else 1 for small models. Pure."""
    if override:
        try:
            return max(1, int(override))
        except ValueError:
            raise TrainingConfigError(
                f"{THREADS_ENV} must be a whole number (got {override!r})",
                hint=f"unset {THREADS_ENV} or set it to e.g. 2") from None
    return 1 if num_params < _SMALL_MODEL_PARAMS else max(1, cpus)


@contextlib.contextmanager
def cpu_threads(settings: DeviceSettings, num_params: int,
                budget: float | None = None) -> Iterator[int]:
    """Run the block with the thread count of :func:`cpu_threads_for`, then restore it.
    ``budget``: the cores this process may use (the recipe's ``training.resources.cpus``,
    shared by its processes); else every core of the machine."""
    import torch

    if settings.device != "cpu":
        yield torch.get_num_threads()
        return
    cores = max(1, int(budget)) if budget is not None else (os.cpu_count() or 1)
    wanted = cpu_threads_for(num_params, cores, os.environ.get(THREADS_ENV))
    old = torch.get_num_threads()
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(old)
