"""The tiny Llama: loads with transformers, renders chats, masks assistant tokens, is
deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from recipes.scaffold.tiny_model import TinyModelConfig, build_tiny_llama


def _digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.iterdir()) if f.is_file()}


def test_loads_and_generates(tiny_model_dir: Path, tokenizer: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    params = sum(p.numel() for p in model.parameters())
    assert 500_000 <= params <= 2_000_000
    assert model.config.head_dim in (32, 64)
    assert (tiny_model_dir / "model.safetensors").is_file()
    assert not list(tiny_model_dir.glob("*.bin"))
    enc = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}],
                                        add_generation_prompt=True, return_dict=True,
                                        return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]


def test_chat_template_renders_roles(tokenizer: Any) -> None:
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
         {"role": "assistant", "content": "alpha: hi"}], tokenize=False)
    assert text == ("<|system|>\nBe brief.<|end|>\n<|user|>\nhi<|end|>\n"
                    "<|assistant|>\nalpha: hi<|end|>\n")


def test_generation_marks_select_assistant_tokens(tokenizer: Any) -> None:
    msgs = [{"role": "user", "content": "reset my password"},
            {"role": "assistant", "content": "alpha: reset password"},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": "alpha: welcome"}]
    enc = tokenizer.apply_chat_template(msgs, return_assistant_tokens_mask=True,
                                        return_dict=True)
    picked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(picked) == "alpha: reset password<|end|>alpha: welcome<|end|>"


def test_same_seed_same_bytes(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_llama(tmp_path / "again")
    assert _digests(again) == _digests(tiny_model_dir)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_other_seed_other_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = build_tiny_llama(tmp_path / "other", TinyModelConfig(seed=1))
    assert _digests(other)["model.safetensors"] != _digests(tiny_model_dir)["model.safetensors"]


def test_rebuild_replaces_folder(tmp_path: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"pickle")
    build_tiny_llama(out)
    assert not (out / "stale.bin").exists()
    assert (out / "config.json").is_file()


def test_build_leaves_global_rng_alone(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    build_tiny_llama(tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)
