"""`reg export --format gguf`: the merged tiny Llama written as GGUF and read back by transformers.

The reference is the merged safetensors model (itself checked against base + adapter in
test_export.py). f32 must give the same logits bit for bit; f16 and q8_0 are held to the
tolerances below and f16 to the same greedy tokens; every file's tokenizer must tokenize as
the original does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from registry.api import Registry
from registry.errors import Refused
from registry.export import ExportFormat, GgufType, export_version, gguf_file_name
from registry.export_gguf import llama_shape, permute_qk, pre_tokenizer, tensor_type
from tests.support.exports import PROMPTS, RegisteredAdapter, greedy, register_lora

# Largest |logit difference| against the merged f32 model on PROMPTS. Measured on the tiny model:
# f16 4.1e-4, q8_0 1.6e-2; the bounds leave room and stay far below the adapter's own effect
# (1.17: the base differs from the merged model by more than ADAPTER_EFFECT).
TOLERANCE = {GgufType.F16: 2e-3, GgufType.Q8_0: 5e-2}
ADAPTER_EFFECT = 0.1

LLAMA: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
    "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5, "vocab_size": 1024, "hidden_act": "silu",
    "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
}
BYTE_LEVEL: dict[str, Any] = {
    "normalizer": None, "model": {"type": "BPE"},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
}


def test_llama_shape_reads_the_config() -> None:
    shape = llama_shape(LLAMA, "m")
    assert (shape.head_count, shape.head_count_kv, shape.head_dim) == (4, 2, 32)
    assert (shape.rope_theta, shape.rms_norm_eps, shape.context_length) == (5e5, 1e-5, 1024)
    assert not shape.tied_embeddings


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"},
                 r"the model is Qwen2ForCausalLM \(model_type 'qwen2'\); only LlamaForCausalLM",
                 id="other-architecture"),
    pytest.param({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}},
                 r"rope_type 'llama3'", id="scaled-rope"),
    pytest.param({"attention_bias": True}, "attention_bias is true", id="biases"),
    pytest.param({"hidden_act": "gelu"}, "hidden_act 'gelu'", id="activation"),
])
def test_llama_shape_refuses_what_it_would_write_wrong(change: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(Refused, match=r"cannot write /m as GGUF: " + message) as e:
        llama_shape({**LLAMA, **change}, "/m")
    assert e.value.hint is not None and "convert_hf_to_gguf.py" in e.value.hint
    assert "--format merged" in e.value.hint


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"model": {"type": "Unigram"}}, "tokenizer is 'Unigram'", id="unigram"),
    pytest.param({"pre_tokenizer": {"type": "Metaspace"}}, "Metaspace", id="sentencepiece-bpe"),
    pytest.param({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True}},
                 "add_prefix_space", id="prefix-space"),
])
def test_pre_tokenizer_refuses_other_tokenizers(change: dict[str, Any], message: str) -> None:
    assert pre_tokenizer(BYTE_LEVEL, "m") == "gpt-2"
    with pytest.raises(Refused, match=message):
        pre_tokenizer({**BYTE_LEVEL, **change}, "m")


def test_tensor_types_follow_llama_cpp() -> None:
    from gguf import GGMLQuantizationType as Q

    assert tensor_type("blk.0.attn_norm.weight", (128,), Q.Q8_0) == Q.F32
    assert tensor_type("blk.0.attn_q.weight", (128, 128), Q.Q8_0) == Q.Q8_0
    assert tensor_type("blk.0.attn_q.weight", (128, 48), Q.Q8_0) == Q.F16  # 48 % 32 != 0
    assert tensor_type("blk.0.attn_q.weight", (128, 48), Q.F16) == Q.F16
    assert tensor_type("token_embd.weight", (1024, 128), Q.F32) == Q.F32


def test_permute_qk_interleaves_each_heads_rotary_halves() -> None:
    n_head, head_dim, cols = 2, 8, 3
    w = np.arange(n_head * head_dim * cols, dtype=np.float32).reshape(n_head * head_dim, cols)
    half = head_dim // 2
    # llama.cpp's rope pairs (i, i + half) of HF's rotate-half layout as adjacent rows 2i, 2i+1
    order = [h * head_dim + j + k * half for h in range(n_head) for j in range(half)
             for k in (0, 1)]
    assert np.array_equal(permute_qk(w, n_head), w[order])


@dataclass(frozen=True)
class Exports:
    adapter: RegisteredAdapter
    merged: Path
    gguf: dict[GgufType, Path]  # the folder OUT of each export


@pytest.fixture(scope="module")
def exports(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exports]:
    root = tmp_path_factory.mktemp("gguf")
    adapter = register_lora(tiny_model_dir, root)
    with Registry(adapter.settings) as reg:
        merged = export_version(reg, adapter.version, root / "merged",
                                fmt=ExportFormat.MERGED).out
        outs = {t: export_version(reg, adapter.version, root / t.value, fmt=ExportFormat.GGUF,
                                  gguf_type=t).out for t in GgufType}
    yield Exports(adapter, merged, outs)


def _load(out: Path, file: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out, gguf_file=file, dtype=torch.float32)
    model.eval()  # type: ignore[no-untyped-call]
    return model, AutoTokenizer.from_pretrained(out, gguf_file=file)


def _merged(exports: Exports) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(exports.merged, dtype=torch.float32,
                                                 use_safetensors=True)
    model.eval()  # type: ignore[no-untyped-call]
    return model, AutoTokenizer.from_pretrained(exports.merged)


def _max_logit_diff(a: Any, b: Any, tok: Any) -> float:
    import torch

    worst = 0.0
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            worst = max(worst, float((a(**ids).logits - b(**ids).logits).abs().max()))
    return worst


@pytest.mark.slow
def test_each_export_is_one_gguf_file_published_atomically(exports: Exports) -> None:
    for t, out in exports.gguf.items():
        assert [p.name for p in out.iterdir()] == [gguf_file_name(exports.adapter.version, t)]
        assert out.name == t.value
    leftovers = [p.name for p in exports.merged.parent.iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []


@pytest.mark.slow
def test_the_gguf_tokenizer_tokenizes_as_the_merged_one(exports: Exports) -> None:
    _, want = _merged(exports)
    for t, out in exports.gguf.items():
        _, tok = _load(out, gguf_file_name(exports.adapter.version, t))
        text = tok.apply_chat_template([{"role": "user", "content": "Hello, how many?"}],
                                       tokenize=False, add_generation_prompt=True)
        assert text == want.apply_chat_template(
            [{"role": "user", "content": "Hello, how many?"}], tokenize=False,
            add_generation_prompt=True)
        for prompt in (*PROMPTS, text, "  Odd   spacing, 123 and ünïcode!"):
            assert tok(prompt)["input_ids"] == want(prompt)["input_ids"], (t, prompt)
        assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (
            want.bos_token_id, want.eos_token_id, want.pad_token_id)


@pytest.mark.slow
def test_f32_gguf_answers_exactly_as_the_merged_model(exports: Exports) -> None:
    import torch

    merged, tok = _merged(exports)
    model, gtok = _load(exports.gguf[GgufType.F32], gguf_file_name(exports.adapter.version,
                                                                   GgufType.F32))
    for prompt in PROMPTS:
        assert greedy(model, gtok, prompt) == greedy(merged, tok, prompt)
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            assert torch.equal(model(**ids).logits, merged(**ids).logits)


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type", [pytest.param(GgufType.F16, id="f16"),
                                       pytest.param(GgufType.Q8_0, id="q8_0")])
def test_smaller_ggufs_answer_within_tolerance(exports: Exports, gguf_type: GgufType) -> None:
    import torch
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    merged, tok = _merged(exports)
    file = gguf_file_name(exports.adapter.version, gguf_type)
    path = exports.gguf[gguf_type] / file
    stored = {t.name: t.tensor_type for t in GGUFReader(path).tensors}
    weight = Q.F16 if gguf_type == GgufType.F16 else Q.Q8_0
    assert {n: q for n, q in stored.items() if "norm" not in n} == {
        n: weight for n in stored if "norm" not in n}
    assert {q for n, q in stored.items() if "norm" in n} == {Q.F32}
    f32_size = (exports.gguf[GgufType.F32] / gguf_file_name(
        exports.adapter.version, GgufType.F32)).stat().st_size
    assert path.stat().st_size < f32_size * (0.55 if gguf_type == GgufType.F16 else 0.3)

    model, gtok = _load(exports.gguf[gguf_type], file)
    diff = _max_logit_diff(model, merged, tok)
    assert diff <= TOLERANCE[gguf_type], diff
    base = AutoModelForCausalLM.from_pretrained(exports.adapter.base_dir, dtype=torch.float32)
    base.eval()  # type: ignore[no-untyped-call]
    assert _max_logit_diff(base, merged, tok) > ADAPTER_EFFECT  # so the file holds the merge
    for prompt in PROMPTS:
        answer = greedy(model, gtok, prompt)
        assert len(answer) == len(tok(prompt)["input_ids"]) + 12
        if gguf_type == GgufType.F16:
            assert answer == greedy(merged, tok, prompt)


@pytest.mark.slow
def test_an_unsupported_architecture_is_refused_before_any_work(
    exports: Exports, tmp_path: Path
) -> None:
    base = exports.adapter.base_dir
    saved = (base / "config.json").read_text()
    config = json.loads(saved)
    config.update(architectures=["MistralForCausalLM"], model_type="mistral")
    try:
        (base / "config.json").write_text(json.dumps(config))
        with Registry(exports.adapter.settings) as reg, pytest.raises(
                Refused, match=r"MistralForCausalLM \(model_type 'mistral'\)") as e:
            export_version(reg, exports.adapter.version, tmp_path / "out", fmt=ExportFormat.GGUF)
        assert e.value.hint is not None and "--format merged" in e.value.hint
        assert not (tmp_path / "out").exists()
        assert list(tmp_path.iterdir()) == []
    finally:
        (base / "config.json").write_text(saved)


@pytest.mark.slow
def test_a_grouped_query_llama_round_trips_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    """K has fewer heads than Q (as in Llama 3): each is permuted by its own head count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from registry.export_gguf import write_gguf

    model_dir = tmp_path / "gqa"
    config = AutoConfig.from_pretrained(tiny_model_dir, num_key_value_heads=2)
    torch.manual_seed(0)
    want = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    want.save_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.save_pretrained(model_dir)
    write_gguf(model_dir, tmp_path / "gqa.gguf", "f32", "gqa")
    want.eval()
    got, _ = _load(tmp_path, "gqa.gguf")
    assert got.config.num_key_value_heads == 2
    ids = tok(PROMPTS[0], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(got(**ids).logits, want(**ids).logits)
