"""The reward-model path: trl's RewardTrainer, a LoRA adapter on a sequence-classification head.

The base causal LM is loaded as ``AutoModelForSequenceClassification`` with one label: its
transformer plus a fresh linear ``score`` head giving one scalar per sequence (read at the
last non-padding token). PEFT's SEQ_CLS task saves that head with the adapter
(``modules_to_save``), so the artifact is the adapter and the head, in safetensors.

Evaluation ranks the held-out test pairs: the share where the chosen answer scores above
the rejected one (``preference.chosen_preferred``, gate ``min_pairwise_accuracy``), for the
trained model and for the untrained head (the same model with the adapter disabled, which
restores the head as initialised from the seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from trl.trainer.reward_config import RewardConfig
from trl.trainer.reward_trainer import RewardTrainer

from recipes.evaluation.report import PreferenceMetrics
from recipes.schema import AdapterMethod, AdapterSpec, BaseModelSpec
from recipes.training.checkpoint import SafeCheckpointMixin

if TYPE_CHECKING:
    import datasets
    from peft import PeftConfig
    from transformers import PreTrainedTokenizerBase

    from recipes.training.model import DeviceSettings

PREFERENCE_COLUMNS = ["prompt", "chosen", "rejected"]


class RegRewardTrainer(SafeCheckpointMixin, RewardTrainer):
    """RewardTrainer with reg's atomic, pickle-free checkpoints."""

    ewc: None = None  # EWC is refused for this objective at validation

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        for key in ("chosen_attention_mask", "rejected_attention_mask", "attention_mask"):
            mask = inputs.get(key)
            if isinstance(mask, torch.Tensor):
                self.state.num_input_tokens_seen += int(mask.sum())


def load_reward_base(base: BaseModelSpec, model_dir: Path, settings: DeviceSettings, *,
                     pad_token_id: int, quantize: bool) -> Any:
    """The base model with a one-label score head, from safetensors only."""
    from transformers import AutoModelForSequenceClassification

    from recipes.training.model import load_pretrained

    model: Any = load_pretrained(
        AutoModelForSequenceClassification, base, model_dir, settings, quantize=quantize,
        what="a sequence-classification model",
        hint="point base_model.path at a Hugging Face model folder with *.safetensors weights "
        "whose architecture has a ForSequenceClassification class (Llama, Qwen2, Mistral, ...)",
        num_labels=1)
    model.config.pad_token_id = pad_token_id
    return model


def reward_peft_config(adapter: AdapterSpec) -> PeftConfig:
    """LoRA (or DoRA) for a SEQ_CLS model; PEFT adds the score head to modules_to_save. Pure."""
    from peft import LoraConfig, TaskType

    targets: list[str] | str = (adapter.target_modules if isinstance(adapter.target_modules, str)
                                else list(adapter.target_modules))
    lora: dict[str, Any] = {
        "task_type": TaskType.SEQ_CLS,
        "r": adapter.r,
        "lora_alpha": adapter.alpha,
        "lora_dropout": adapter.dropout,
        "target_modules": targets,
        "bias": adapter.bias,
        "use_rslora": adapter.use_rslora,
        "use_dora": adapter.method is AdapterMethod.dora,
        "modules_to_save": adapter.modules_to_save,
    }
    config: PeftConfig = LoraConfig(**lora)
    return config


def reward_config(common: dict[str, Any], *, max_length: int) -> RewardConfig:
    """trl's config from the shared TrainingArguments values."""
    # One process keeps the tokenization deterministic (as for DPO).
    return RewardConfig(**common, max_length=max_length, dataset_num_proc=None)


def build_reward_trainer(model: Any, args: RewardConfig, train: datasets.Dataset,
                         validation: datasets.Dataset | None, tokenizer: Any,
                         callbacks: list[Any], peft_config: PeftConfig) -> RegRewardTrainer:
    return RegRewardTrainer(
        model=model,
        args=args,
        train_dataset=train.select_columns(PREFERENCE_COLUMNS),
        eval_dataset=(validation.select_columns(PREFERENCE_COLUMNS)
                      if validation is not None else None),
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_config,
    )


def _texts(tokenizer: PreTrainedTokenizerBase, ds: datasets.Dataset, side: str) -> list[str]:
    out = []
    for row in ds:
        messages = [*row["prompt"], *row[side]]
        out.append(str(tokenizer.apply_chat_template(messages, tokenize=False)))
    return out


@torch.no_grad()
def score_texts(model: Any, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                max_len: int) -> list[float]:
    """The reward model's scalar for each text, one at a time (no padding to reason about)."""
    model.eval()
    device = next(model.parameters()).device
    scores: list[float] = []
    for text in texts:
        enc = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_len,
                        return_tensors="pt")
        out = model(input_ids=enc["input_ids"].to(device),
                    attention_mask=enc["attention_mask"].to(device))
        scores.append(float(out.logits[0, 0]))
    return scores


def pairwise_metrics(model: Any, tokenizer: PreTrainedTokenizerBase, ds: datasets.Dataset,
                     max_len: int) -> PreferenceMetrics:
    """Share of pairs with chosen scored above rejected, trained and with the adapter off."""
    if len(ds) == 0:
        return PreferenceMetrics(examples=0)
    chosen, rejected = _texts(tokenizer, ds, "chosen"), _texts(tokenizer, ds, "rejected")
    tc, tr = score_texts(model, tokenizer, chosen, max_len), score_texts(
        model, tokenizer, rejected, max_len)
    with model.disable_adapter():
        bc, br = score_texts(model, tokenizer, chosen, max_len), score_texts(
            model, tokenizer, rejected, max_len)
    n = len(tc)
    return PreferenceMetrics(
        examples=n,
        chosen_preferred=sum(tc[i] > tr[i] for i in range(n)) / n,
        base_chosen_preferred=sum(bc[i] > br[i] for i in range(n)) / n,
        reward_margin_mean=sum(tc[i] - tr[i] for i in range(n)) / n,
    )
