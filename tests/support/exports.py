"""Builders for the export tests: a real LoRA adapter on the tiny Llama, registered, and greedy
decoding to compare what two models answer."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from recipes.artifact import write_manifest
from registry.api import Registry
from registry.settings import Settings
from registry.tables import VersionPublic

PROMPTS = ("the time of", "write a list", "<|user|>\nhow many<|end|>\n<|assistant|>\n")


def make_lora_artifact(base_dir: Path, out: Path) -> Path:
    """A real LoRA adapter on the tiny model, with non-zero B so it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from recipes.identity import model_identity

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "recipe.yaml").write_text("apiVersion: reg/v1\nkind: Recipe\n")
    (out / "metrics.json").write_text(json.dumps({"gates_passed": True, "gates": []}))
    write_manifest(out, {
        "name": "support-bot", "spec_hash": "sha256:" + "e" * 64,
        "base_model": model_identity(base_dir), "base_model_path": str(base_dir),
        "data_digests": {}, "method": "lora", "adapter_rank": 8, "objective": "sft",
    })
    return out


@dataclass(frozen=True)
class RegisteredAdapter:
    base_dir: Path  # a copy of the tiny model the adapter was built on
    artifact: Path
    settings: Settings  # a SQLite registry under a temp home holding it as support-bot@v1
    version: VersionPublic


def register_lora(tiny_model_dir: Path, root: Path) -> RegisteredAdapter:
    """Copy the tiny model under ``root``, build a LoRA adapter on it and register it as v1."""
    base_dir = root / "base"
    shutil.copytree(tiny_model_dir, base_dir)
    art = make_lora_artifact(base_dir, root / "artifact")
    settings = Settings.for_home(root / "home")
    with Registry(settings) as reg:
        version = reg.register_artifact(art)
    return RegisteredAdapter(base_dir, art, settings, version)


def greedy(model: object, tok: object, prompt: str, max_new_tokens: int = 12) -> list[int]:
    """The prompt's ids followed by ``max_new_tokens`` greedy tokens (no early stop)."""
    import torch

    ids = tok(prompt, return_tensors="pt")  # type: ignore[operator]
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens,  # type: ignore[attr-defined]
                             min_new_tokens=max_new_tokens, do_sample=False)
    return [int(t) for t in out[0].tolist()]
