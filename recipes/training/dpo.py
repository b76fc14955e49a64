"""The DPO path: trl's DPOTrainer, with reg's checkpoints and the optional EWC term.

trl tokenizes the conversational prompt/chosen/rejected rows itself (the data
pipeline hands them over in trl's conversational format) and, with a PEFT
adapter, uses the same model with the adapter disabled as the frozen
reference, so no second copy of the base is held in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from trl.trainer.dpo_config import DPOConfig
from trl.trainer.dpo_trainer import DPOTrainer

from recipes.training.checkpoint import SafeCheckpointMixin
from recipes.training.ewc import penalty_share, with_penalty

if TYPE_CHECKING:
    import datasets

    from recipes.training.ewc import EWCPenalty

PREFERENCE_COLUMNS = ["prompt", "chosen", "rejected"]


class RegDPOTrainer(SafeCheckpointMixin, DPOTrainer):
    ewc: EWCPenalty | None = None

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any],
                     return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        parent: Any = super()  # trl's compute_loss is untyped
        result: Any = parent.compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return with_penalty(self.ewc, model, result, return_outputs,
                            share=penalty_share(self, num_items_in_batch))

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        mask = inputs.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            self.state.num_input_tokens_seen += int(mask.sum())


def preference_rows(ds: datasets.Dataset) -> datasets.Dataset:
    return ds.select_columns(PREFERENCE_COLUMNS)


def dpo_config(common: dict[str, Any], *, beta: float, loss_type: str,
               max_length: int) -> DPOConfig:
    """trl's config from the shared TrainingArguments values plus the DPO settings."""
    return DPOConfig(
        **common,
        beta=beta,
        loss_type=[loss_type],
        max_length=max_length,
        # The dataset is small and already clean; one process avoids fork
        # overhead and keeps the tokenization deterministic.
        dataset_num_proc=None,
    )


def build_dpo_trainer(
    model: Any,
    ref_model: Any,
    args: DPOConfig,
    train: datasets.Dataset,
    validation: datasets.Dataset | None,
    tokenizer: Any,
    callbacks: list[Any],
    workdir: Path,
) -> RegDPOTrainer:
    return RegDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=preference_rows(train),
        eval_dataset=preference_rows(validation) if validation is not None else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
