"""The GRPO path: trl's GRPOTrainer optimising the policy's adapter against the recipe's rewards.

The prompts are the chat rows' prompt side (every turn before the last assistant answer).
Rule rewards are pure functions (:mod:`recipes.training.rewards`); a reward model is a
registered version of ``objective: reward``, pinned at plan time to a version and its
artifact digest (``identity["reward_models"]``). Training never resolves a stage itself:
it loads the pinned artifact from ``<workdir>/reward-models/<digest hex>`` (where the
registry side materialised it, every file verified), checks that the manifest's sha256 is
the pinned digest, and loads the adapter and score head from safetensors only, on the
recipe's own base model (the plan checked the reward model was trained on the same one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from trl.trainer.grpo_config import GRPOConfig
from trl.trainer.grpo_trainer import GRPOTrainer

from recipes.core.errors import RegError
from recipes.schema.training import GRPOSpec, ModelReward
from recipes.training.checkpoint import SafeCheckpointMixin
from recipes.training.rewards import rule_reward_func
from recipes.training.workdir import REWARD_MODELS_DIR

if TYPE_CHECKING:
    import datasets

    from recipes.loading.loader import LoadedRecipe
    from recipes.training.model import DeviceSettings

PINS_KEY = "reward_models"


class RegGRPOTrainer(SafeCheckpointMixin, GRPOTrainer):
    """GRPOTrainer with reg's atomic, pickle-free checkpoints."""

    ewc: None = None  # EWC is refused for this objective at validation

    def _track_num_input_tokens(self, inputs: Any) -> None:
        # GRPO's step gets the raw prompt rows (a list) and tokenizes while generating;
        # tokens are counted only when a batch of tensors comes through.
        if not isinstance(inputs, dict):
            return
        for key in ("prompt_mask", "completion_mask"):
            mask = inputs.get(key)
            if isinstance(mask, torch.Tensor):
                self.state.num_input_tokens_seen += int(mask.sum())


@dataclass(frozen=True)
class RewardPin:
    """A reward model reference resolved to one version and its artifact digest."""

    ref: str
    model: str
    version: int
    artifact_digest: str

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "model": self.model, "version": self.version,
                "artifact_digest": self.artifact_digest}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RewardPin:
        return cls(str(data["ref"]), str(data["model"]), int(data["version"]),
                   str(data["artifact_digest"]))


def prompt_rows(ds: datasets.Dataset) -> datasets.Dataset:
    """``{prompt: [messages before the last assistant turn]}`` for each chat row."""
    def prompt(row: dict[str, Any]) -> dict[str, Any]:
        messages = list(row["messages"])
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"),
                   default=len(messages))
        return {"prompt": messages[:last]}

    return ds.map(prompt, remove_columns=ds.column_names)


def grpo_config(common: dict[str, Any], g: GRPOSpec) -> GRPOConfig:
    """trl's config from the shared TrainingArguments values and training.grpo."""
    return GRPOConfig(
        **common,
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        beta=g.beta,
        temperature=g.temperature,
        reward_weights=[r.weight for r in g.rewards],
        # One process keeps the tokenization deterministic; nothing logged to the Hub.
        log_completions=False,
    )


def pins_of(identity: dict[str, Any]) -> dict[str, RewardPin]:
    """The pinned reward models of a manifest identity, by the recipe's reference."""
    return {p["ref"]: RewardPin.from_json(p) for p in identity.get(PINS_KEY, [])}


def pinned_artifact(workdir: Path, pin: RewardPin) -> Path:
    """The pinned reward model's artifact, checked against its digest before any load."""
    from recipes.artifact import MANIFEST_NAME, sha256_file, verify_manifest

    hexdigest = pin.artifact_digest.split(":", 1)[-1]
    path = workdir / REWARD_MODELS_DIR / hexdigest
    fix = "run it through `reg reconcile` or `reg train`, which fetch it from the registry"
    if not (path / MANIFEST_NAME).is_file():
        raise RegError(f"the reward model {pin.ref} ({pin.model}@v{pin.version}) is not "
                       f"fetched into {path}", hint=fix)
    if "sha256:" + sha256_file(path / MANIFEST_NAME) != pin.artifact_digest:
        raise RegError(f"{path} is not the artifact pinned for {pin.ref} "
                       f"({pin.artifact_digest})", hint=fix)
    verify_manifest(path)
    return path


def load_reward_model(loaded: LoadedRecipe, artifact: Path, settings: DeviceSettings,
                      pad_token_id: int) -> Any:
    """The reward model (base + adapter + score head) merged into one frozen model."""
    from peft import PeftModel

    from recipes.training.reward import load_reward_base

    base = load_reward_base(loaded.recipe.spec.base_model, loaded.base_model_path, settings,
                            pad_token_id=pad_token_id, quantize=False)
    # safetensors only: PeftModel prefers adapter_model.safetensors, and the store refuses
    # pickles in an artifact (registry.store.check_file_kinds).
    peft_model: Any = PeftModel.from_pretrained(base, str(artifact), is_trainable=False,
                                                use_safetensors=True)
    merged = peft_model.merge_and_unload()
    merged.eval()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged


def reward_funcs(loaded: LoadedRecipe, workdir: Path, identity: dict[str, Any],
                 settings: DeviceSettings, tokenizer: Any) -> tuple[list[Any], list[Any]]:
    """trl's reward functions and their processing classes, in the recipe's order."""
    g = loaded.recipe.spec.training.grpo
    pins = pins_of(identity)
    funcs: list[Any] = []
    classes: list[Any] = []
    for i, r in enumerate(g.rewards):
        if isinstance(r, ModelReward):
            pin = pins.get(r.model)
            if pin is None:
                raise RegError(
                    f"training.grpo.rewards.{i}: the reward model {r.model} was not pinned to "
                    "a version by the plan",
                    hint="train this recipe with `reg reconcile` or `reg train`, which resolve "
                    "it in the registry")
            artifact = pinned_artifact(workdir, pin)
            funcs.append(load_reward_model(loaded, artifact, settings,
                                           int(tokenizer.pad_token_id)))
            classes.append(tokenizer)
        else:
            funcs.append(rule_reward_func(r, i))
            classes.append(None)
    return funcs, classes


def build_grpo_trainer(model: Any, args: GRPOConfig, train: datasets.Dataset,
                       tokenizer: Any, funcs: list[Any], classes: list[Any],
                       callbacks: list[Any], peft_config: Any) -> RegGRPOTrainer:
    return RegGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=prompt_rows(train),
        processing_class=tokenizer,
        reward_processing_classes=classes,
        callbacks=callbacks,
        peft_config=peft_config,
    )
