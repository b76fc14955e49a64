"""The recipe's ``spec.training`` section: the objective and how it is trained."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator

from recipes.schema.base import Strict


class Objective(StrEnum):
    """sft: loss on the assistant's turns; dpo: preference pairs; cpt: packed raw text."""
    sft = "sft"  # supervised fine-tuning, loss on the assistant's turns only
    dpo = "dpo"  # direct preference optimisation on prompt/chosen/rejected
    cpt = "cpt"  # continued pre-training on raw text, packed


class EarlyStopping(Strict):
    """Stop when the validation loss stops falling (needs training.eval_every_steps)."""
    patience: int = Field(
        default=3, gt=0, description="Evaluations without improvement before stopping."
    )
    threshold: float = Field(default=0.0, ge=0, description="Minimum decrease of validation loss.")


class EWCSpec(Strict):
    """Elastic weight consolidation: a penalty on moving weights the reference data needs."""
    weight: float = Field(default=100.0, gt=0, description="lambda of the EWC penalty.")
    reference: str | None = Field(
        default=None, description="Data for the Fisher estimate; defaults to the replay data."
    )
    samples: int = Field(default=32, gt=0, description="Examples used for the Fisher estimate.")


# The trackers ``training.report_to`` may name: the transformers integrations reg installs
# with its ``tracking`` extra and ties to the registry (recipes.training.tracking).
Tracker = Literal["mlflow", "tensorboard"]
TRACKERS: tuple[Tracker, ...] = ("mlflow", "tensorboard")


class DPOSpec(Strict):
    """Settings of objective dpo (trl's DPOTrainer)."""
    beta: float = Field(default=0.1, gt=0, description="Strength of the KL constraint.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(default="sigmoid",
                                                          description="trl's DPO loss.")


class TrainingSpec(Strict):
    """How the adapter is trained (transformers + peft + trl)."""
    objective: Objective = Field(default=Objective.sft, description="What the loss is.")
    epochs: float = Field(
        default=1.0, gt=0, description="Passes over the data (ignored if max_steps)."
    )
    max_steps: int | None = Field(default=None, gt=0, description="Stop after this many steps.")
    learning_rate: float | Literal["auto"] = Field(
        default="auto", description="A number, or auto: chosen by method, model and data size."
    )
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="linear", description="Learning-rate schedule after the warmup.")
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1, description="Share of steps warming up.")
    weight_decay: float = Field(default=0.0, ge=0, description="The optimizer's weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    batch_size: int = Field(default=8, gt=0, description="Examples per device step.")
    gradient_accumulation_steps: int = Field(
        default=1, gt=0, description="Steps per update; effective batch = batch_size x this.")
    max_seq_length: int = Field(default=512, gt=0, description="Tokens per example (truncated).")
    packing: bool = Field(default=False, description="Pack short examples into full sequences.")
    seed: int = Field(default=42, description="Same recipe, data and seed: same adapter bytes.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: fp32 on CPU (bf16 is 7-25x slower there), bf16 on CUDA."
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        default="auto", description="auto: off on CPU, on for large models on CUDA."
    )
    eval_every_steps: int | None = Field(default=None, gt=0, description="Validate every N steps.")
    early_stopping: EarlyStopping | None = None
    checkpoint_every_steps: int = Field(
        default=50, gt=0, description="Resumable checkpoint period."
    )
    keep_checkpoints: int = Field(default=2, gt=0, description="How many checkpoints to keep.")
    dpo: DPOSpec = Field(default_factory=DPOSpec)
    ewc: EWCSpec | None = Field(default=None, description="Elastic weight consolidation penalty.")
    report_to: Tracker | list[Tracker] = Field(
        default_factory=list,
        description="Experiment trackers the trainer logs to (transformers' report_to): "
        "mlflow, tensorboard, or a list of both; none by default. Settings come from the "
        "environment (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME); TensorBoard writes under "
        "the run's workdir. Not part of the spec hash: turning tracking on does not retrain.",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_trackers(cls, value: object) -> object:
        # Before the type check, so a bad value gets one message with the fix instead of
        # pydantic's two (one per member of the union).
        names = value if isinstance(value, list) else [value]
        unknown = [n for n in names if n not in TRACKERS]
        fix = "use mlflow, tensorboard or a list of them ([mlflow, tensorboard]), or leave it out"
        if unknown or not isinstance(value, list | str):
            raise ValueError(f"not a tracker reg logs to: {', '.join(map(repr, unknown))}; {fix}")
        if len(set(names)) < len(names):
            raise ValueError(f"a tracker is named twice: {', '.join(map(str, names))}; "
                             "name each once")
        return value

    @property
    def trackers(self) -> tuple[Tracker, ...]:
        """``report_to`` as a tuple, whether the recipe wrote one name or a list."""
        return (self.report_to,) if isinstance(self.report_to, str) else tuple(self.report_to)
