"""Build the trainer for a recipe's objective and run it, resuming from the newest checkpoint.

SFT and CPT use :class:`recipes.training.sft.RegTrainer` (a lean
``transformers.Trainer``; see that module for why not trl's SFTTrainer),
DPO uses trl's ``DPOTrainer``, reward trl's ``RewardTrainer`` (a sequence-classification
head) and GRPO trl's ``GRPOTrainer``. All get reg's atomic, pickle-free
checkpoints, the JSONL step log, the progress bar, early stopping and the
optional EWC penalty.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from recipes.core.errors import RegError
from recipes.loading.loader import LoadedRecipe
from recipes.schema import GeneralEval, Objective, TrainingSpec
from recipes.training.checkpoint import newest_checkpoint
from recipes.training.model import (
    DeviceSettings,
    attach_adapter,
    build_peft_config,
    count_parameters,
    load_base_model,
)
from recipes.training.progress import LOG_NAME, EarlyStopping, StepLogger, truncate_log

if TYPE_CHECKING:
    from recipes.data.pipeline import PreparedData
    from recipes.training.ewc import EWCPenalty
    from recipes.training.tracking.session import TrackingSession


def training_arguments(
    t: TrainingSpec, settings: DeviceSettings, workdir: Path, learning_rate: float,
    train_rows: int, has_validation: bool, report_to: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments shared by TrainingArguments and trl's DPOConfig. Pure.

    Everything is spelled out so trl's defaults (bf16 and gradient
    checkpointing on, 7-25x slower on CPU) never apply silently. ``report_to``
    overrides the recipe's ``training.report_to`` (the tracking session drops a
    tracker it cannot reach).
    """
    trackers = list(t.trackers if report_to is None else report_to)
    per_step = t.batch_size * t.gradient_accumulation_steps
    total = t.max_steps or max(1, math.ceil(t.epochs * math.ceil(train_rows / per_step)))
    evaluate = t.eval_every_steps is not None and has_validation
    # With training.distributed the Trainer joins torchrun's process group (its environment)
    # and shards each step's batches across the ranks; one process ignores these two.
    distributed = {
        "ddp_backend": "nccl" if settings.device == "cuda" else "gloo",
        # LoRA's frozen base weights need no gradient; every trainable one gets one per step.
        "ddp_find_unused_parameters": False,
    } if t.distributed.nproc_per_node > 1 else {}
    return {
        **distributed,
        "output_dir": str(workdir),
        "per_device_train_batch_size": t.batch_size,
        "per_device_eval_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps or -1,
        "learning_rate": learning_rate,
        "lr_scheduler_type": t.lr_scheduler,
        "warmup_steps": t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "seed": t.seed,
        "data_seed": t.seed,
        "bf16": settings.precision == "bf16",
        "fp16": settings.precision == "fp16",
        # The adapter builder enables checkpointing on the model itself.
        "gradient_checkpointing": False,
        "logging_steps": max(1, total // 50),
        "save_strategy": "steps",
        "save_steps": t.checkpoint_every_steps,
        "save_total_limit": None,
        "eval_strategy": "steps" if evaluate else "no",
        "eval_steps": t.eval_every_steps if evaluate else None,
        "prediction_loss_only": True,
        "report_to": trackers or "none",
        "disable_tqdm": True,
        "log_level": "warning",
        "use_cpu": settings.device == "cpu",
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": settings.device == "cuda",
    }


def _reference_texts(loaded: LoadedRecipe, tokenizer: Any) -> list[str]:
    """EWC reference texts: training.ewc.reference, else data.replay, else evaluation.general."""
    from recipes.data.pipeline import load_eval_texts

    spec = loaded.recipe.spec
    ewc = spec.training.ewc
    assert ewc is not None  # only called when the recipe sets training.ewc
    if ewc.reference is not None:
        general = GeneralEval(path=ewc.reference, format=_sniff_format(loaded, ewc.reference),
                              max_examples=ewc.samples)
    elif spec.data.replay is not None:
        general = GeneralEval(path=spec.data.replay.path,
                              format=spec.data.replay.format or spec.data.format,
                              max_examples=ewc.samples)
    elif spec.evaluation.general is not None:
        general = spec.evaluation.general.model_copy(update={"max_examples": ewc.samples})
    else:
        raise RegError(
            "training.ewc needs reference data for its Fisher estimate",
            hint="set training.ewc.reference, data.replay or evaluation.general",
        )
    evaluation = spec.evaluation.model_copy(update={"general": general})
    recipe = loaded.recipe.model_copy(
        update={"spec": spec.model_copy(update={"evaluation": evaluation})})
    return load_eval_texts(dataclasses.replace(loaded, recipe=recipe), tokenizer)


def _sniff_format(loaded: LoadedRecipe, rel: str) -> Any:
    """The format of an EWC reference file: text when its rows have a text field."""
    import json

    from recipes.schema import DataFormat

    path = loaded.resolve(rel)
    with path.open(encoding="utf-8") as f:
        first = f.readline()
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return loaded.recipe.spec.data.format
    if isinstance(row, dict) and loaded.recipe.spec.data.fields.text in row:
        return DataFormat.text
    return loaded.recipe.spec.data.format


def _ewc_penalty(model: Any, loaded: LoadedRecipe, tokenizer: Any) -> EWCPenalty:
    from recipes.training.ewc import build_penalty

    ewc = loaded.recipe.spec.training.ewc
    assert ewc is not None
    max_len = loaded.recipe.spec.training.max_seq_length
    device = next(model.parameters()).device
    batches = []
    for text in _reference_texts(loaded, tokenizer)[: ewc.samples]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_len]
        if len(ids) > 1:
            t = torch.tensor([ids], dtype=torch.long, device=device)
            batches.append({"input_ids": t, "labels": t})
    return build_penalty(model, batches, ewc.weight)


def _sft_trainer(model: Any, data: PreparedData, tokenizer: Any, args: dict[str, Any],
                 t: TrainingSpec, objective: Objective, callbacks: list[Any]) -> Any:
    from transformers import TrainingArguments

    from recipes.training.sft import (
        PackedCollator,
        PadCollator,
        RegTrainer,
        packed_rows,
        token_rows,
    )

    # CPT packs unless the recipe turns packing off explicitly.
    pack = t.packing or (objective is Objective.cpt and "packing" not in t.model_fields_set)
    train_ds = data.splits["train"]
    rows = (packed_rows(train_ds, t.max_seq_length, split_long=objective is Objective.cpt)
            if pack else token_rows(train_ds, t.max_seq_length))
    validation = data.splits.get("validation")
    val_rows = (token_rows(validation, t.max_seq_length)
                if validation is not None and len(validation) else None)
    pad_id = int(tokenizer.pad_token_id)
    trainer = RegTrainer(
        model=model,
        args=TrainingArguments(**args, remove_unused_columns=False),
        train_dataset=rows,
        eval_dataset=val_rows if args["eval_strategy"] != "no" else None,
        data_collator=PackedCollator(pad_id) if pack else PadCollator(pad_id),
        callbacks=callbacks,
    )
    trainer.reg_packed = pack
    return trainer


def _dpo_trainer(base: Any, loaded: LoadedRecipe, data: PreparedData, tokenizer: Any,
                 settings: DeviceSettings, args: dict[str, Any], callbacks: list[Any],
                 quantized: bool) -> Any:
    from peft import prepare_model_for_kbit_training as _prepare

    from recipes.training.dpo import RegDPOTrainer, dpo_config, preference_rows

    spec = loaded.recipe.spec
    t = spec.training
    peft_config = build_peft_config(spec.adapter, loaded.base_model_path)
    prepare_model_for_kbit_training: Any = _prepare  # untyped
    if quantized:
        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=settings.gradient_checkpointing)
    ref_model = None
    if peft_config is None:
        ref_model = load_base_model(spec.base_model, loaded.base_model_path, settings,
                                    quantize=False)
    validation = data.splits.get("validation")
    use_val = args["eval_strategy"] != "no" and validation is not None and len(validation) > 0
    return RegDPOTrainer(
        model=base,
        ref_model=ref_model,
        args=dpo_config(args, beta=t.dpo.beta, loss_type=t.dpo.loss_type,
                        max_length=t.max_seq_length),
        train_dataset=preference_rows(data.splits["train"]),
        eval_dataset=preference_rows(validation) if use_val and validation is not None else None,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_config,
    )


def _reward_trainer(loaded: LoadedRecipe, data: PreparedData, tokenizer: Any,
                    settings: DeviceSettings, args: dict[str, Any], callbacks: list[Any],
                    quantized: bool) -> Any:
    from recipes.training.reward import (
        build_reward_trainer,
        load_reward_base,
        reward_config,
        reward_peft_config,
    )

    spec = loaded.recipe.spec
    base = load_reward_base(spec.base_model, loaded.base_model_path, settings,
                            pad_token_id=int(tokenizer.pad_token_id), quantize=quantized)
    validation = data.splits.get("validation")
    use_val = args["eval_strategy"] != "no" and validation is not None and len(validation) > 0
    return build_reward_trainer(
        base, reward_config(args, max_length=spec.training.max_seq_length),
        data.splits["train"], validation if use_val else None, tokenizer, callbacks,
        reward_peft_config(spec.adapter))


def _grpo_trainer(base: Any, loaded: LoadedRecipe, workdir: Path, data: PreparedData,
                  tokenizer: Any, settings: DeviceSettings, args: dict[str, Any],
                  callbacks: list[Any], identity: dict[str, Any]) -> Any:
    from recipes.training.grpo import build_grpo_trainer, grpo_config, reward_funcs

    spec = loaded.recipe.spec
    funcs, classes = reward_funcs(loaded, workdir, identity, settings, tokenizer)
    # GRPO samples its own completions: evaluation on held-out answers is the recipe's
    # evaluation step after training, not a loss during it.
    args = {**args, "eval_strategy": "no", "eval_steps": None}
    return build_grpo_trainer(
        base, grpo_config(args, spec.training.grpo), data.splits["train"], tokenizer, funcs,
        classes, callbacks, build_peft_config(spec.adapter, loaded.base_model_path))


def _trainer(loaded: LoadedRecipe, workdir: Path, tokenizer: Any, data: PreparedData,
             settings: DeviceSettings, args: dict[str, Any], callbacks: list[Any],
             identity: dict[str, Any]) -> Any:
    """The trainer of the recipe's objective, its model built (the seed is already set)."""
    spec = loaded.recipe.spec
    t = spec.training
    quantized = spec.base_model.quantization is not None
    if t.objective is Objective.reward:  # a sequence-classification model, not a causal LM
        return _reward_trainer(loaded, data, tokenizer, settings, args, callbacks, quantized)
    model_dir = loaded.base_model_path
    base = load_base_model(spec.base_model, model_dir, settings, quantize=quantized)
    if t.objective is Objective.grpo:
        return _grpo_trainer(base, loaded, workdir, data, tokenizer, settings, args,
                             callbacks, identity)
    if t.objective is Objective.dpo:
        return _dpo_trainer(base, loaded, data, tokenizer, settings, args, callbacks,
                            quantized)
    model = attach_adapter(base, spec.adapter, model_dir, settings, quantized=quantized)
    return _sft_trainer(model, data, tokenizer, args, t, t.objective, callbacks)


def run_training(
    loaded: LoadedRecipe,
    workdir: Path,
    tokenizer: Any,
    data: PreparedData,
    settings: DeviceSettings,
    *,
    learning_rate: float,
    progress: bool,
    tracking: TrackingSession | None = None,
    identity: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train (or finish training) and return the trained model and a summary of the run.

    ``tracking`` (the recipe's ``training.report_to``, started) says which trackers the
    Trainer reports to, and guards them. ``identity`` (the manifest's) carries the reward
    models the plan pinned for objective grpo."""
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    spec = loaded.recipe.spec
    t = spec.training
    found = newest_checkpoint(workdir)
    resumed = found[0] if found else None
    log_path = workdir / LOG_NAME
    if int(os.environ.get("RANK", "0")) == 0:  # of several processes, rank 0 writes the log
        truncate_log(log_path, resumed or 0)
    logger = StepLogger(log_path, progress)
    callbacks: list[Any] = [logger]
    if t.early_stopping is not None:
        callbacks.append(EarlyStopping(t.early_stopping.patience, t.early_stopping.threshold))
    validation = data.splits.get("validation")
    args = training_arguments(t, settings, workdir, learning_rate, len(data.splits["train"]),
                              has_validation=validation is not None and len(validation) > 0,
                              report_to=tracking.report_to if tracking is not None else ())

    # The seed is set before the adapter's random init, so a fresh run and a
    # resumed one start from the same weights (which the checkpoint then overwrites).
    set_seed(t.seed)
    trainer = _trainer(loaded, workdir, tokenizer, data, settings, args, callbacks,
                       identity or {})
    # Trainer prints every log dict to stdout when tqdm is off; the JSONL log
    # and the progress bar replace it.
    trainer.remove_callback(PrinterCallback)
    if tracking is not None:
        tracking.configure(trainer)
    trainer.keep_checkpoints = t.keep_checkpoints
    if t.ewc is not None:
        trainer.ewc = _ewc_penalty(trainer.model, loaded, tokenizer)

    start = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(found[1]) if found else None)
    runtime = time.perf_counter() - start
    model = trainer.accelerator.unwrap_model(trainer.model)
    trainable, total = count_parameters(model)
    tokens = trainer.state.num_input_tokens_seen - logger.tokens_at_start
    info: dict[str, Any] = {
        "steps": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "epochs": trainer.state.epoch,
        "resumed_from_step": resumed,
        "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        "train_loss": out.training_loss,
        "runtime_s": runtime,
        "tokens": tokens,
        "tokens_per_s": tokens / runtime if runtime > 0 else 0.0,
        "trainable_params": trainable,
        "total_params": total,
        "packing": bool(getattr(trainer, "reg_packed", False)),
        "train_rows": len(trainer.train_dataset),
        "ewc": trainer.ewc.summary() if trainer.ewc is not None else None,
    }
    model.eval()
    return model, info
