"""Real LoRA training on the tiny Llama, for the serving tests.

Each adapter learns to start every answer with its own keyword ("alpha",
"bravo"), so a response's content proves which version served it. This is real
training (peft + torch, LoRA r=8 on q_proj/v_proj, 40 steps at lr 1e-2, about a
second or two on this CPU; shared/PLATFORM.md), written as a training artifact
with a manifest, so the registry stores and verifies it like any other.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from recipes.artifact import write_manifest

QUESTIONS = (
    "How do I reset my password?", "Where is my order?", "Can I get a refund?",
    "What is the price?", "How is the weather?", "Tell me about shipping.",
    "Explain the invoice.", "Which color is best?", "Help with my account.",
    "What time is it?", "Describe the model.", "Who are you?",
)


def train_keyword_adapter(
    base_dir: Path, out_dir: Path, *, model: str, keyword: str, seed: int = 0,
    steps: int = 40, rank: int = 8,
) -> Path:
    """Train a LoRA adapter whose answers start with ``keyword``; write an artifact dir."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                     lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, cfg)
    rows: list[tuple[list[int], list[int]]] = []
    for i in range(64):
        q = f"{rng.choice(QUESTIONS)} {i}"
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                         add_generation_prompt=True)
        answer = f"{keyword} {keyword} {keyword}<|end|>"
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(answer, add_special_tokens=False)["input_ids"]
        rows.append((p_ids + a_ids, [-100] * len(p_ids) + a_ids))
    optim = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    pad = tok.pad_token_id
    for step in range(steps):
        batch = [rows[(step * 16 + j) % len(rows)] for j in range(16)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in batch])
        labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch])
        mask = (torch.arange(width)[None, :] < torch.tensor([len(x) for x, _ in batch])[:, None])
        loss = peft_model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    for extra in ("README.md",):
        (out_dir / extra).unlink(missing_ok=True)
    (out_dir / "recipe.yaml").write_text(f"# test adapter {model}: answers start with {keyword}\n")
    spec_hash = hashlib.sha256(f"{model}/{keyword}/{seed}/{steps}/{rank}".encode()).hexdigest()
    write_manifest(out_dir, {
        "name": model, "spec_hash": "sha256:" + spec_hash, "base_model_path": str(base_dir),
        "adapter_rank": rank, "method": "lora", "objective": "sft",
    })
    return out_dir
