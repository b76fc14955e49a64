"""A merged Llama model written as one GGUF file (llama.cpp, Ollama, transformers' ``gguf_file=``).

The writing is the ``gguf`` package's (llama.cpp's own Python writer: ``GGUFWriter``, the
tensor names of ``TensorNameMap`` for ``MODEL_ARCH.LLAMA``, ``SpecialVocab`` for the merges,
special ids and chat template, ``quants.quantize`` for the quantized types). What is ours is
what llama.cpp's ``convert_hf_to_gguf.py`` does around it for a Llama with a byte-level BPE
tokenizer, which the package does not ship as a library: the architecture metadata, the token
list with its types, and the Q/K row permutation (llama.cpp's rope pairs dimensions
``(i, i + d/2)`` as adjacent rows). That script is a command-line program over a whole model
folder, not an importable API, hence the few functions here.

Everything that decides is pure (``llama_shape``, ``pre_tokenizer``, ``tensor_type``,
``permute_qk``); ``write_gguf`` does the reading and writing. A model it cannot write is refused
before any work, naming what it found and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

from registry.errors import Refused

# The CLI's choices (registry.export.GgufType) -> (tensor type of 2-D weights, file type).
GGUF_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}

_FIX_OTHER = ("export it with `--format merged` and convert that folder with llama.cpp's "
              "convert_hf_to_gguf.py, which knows more architectures and tokenizers")


@dataclass(frozen=True)
class LlamaShape:
    """The hyper-parameters a Llama GGUF states (llama.cpp's ``llama.*`` keys)."""

    context_length: int
    embedding_length: int
    block_count: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    vocab_size: int
    tied_embeddings: bool


def _refuse(where: str, what: str) -> Refused:
    return Refused(f"cannot write {where} as GGUF: {what}", hint=_FIX_OTHER)


def llama_shape(config: Mapping[str, Any], where: str) -> LlamaShape:
    """The GGUF metadata of a Llama ``config.json``; refuses what this writer would get wrong."""
    archs = config.get("architectures") or []
    model_type = config.get("model_type")
    if model_type != "llama" or archs != ["LlamaForCausalLM"]:
        raise _refuse(where, f"the model is {', '.join(archs) or '?'} (model_type {model_type!r});"
                             " only LlamaForCausalLM (model_type 'llama') is supported")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise _refuse(where, f"rope_type {rope_type!r} (only 'default' rope is written)")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise _refuse(where, f"{flag} is true (Llama GGUF tensors have no biases here)")
    if config.get("hidden_act", "silu") != "silu":
        raise _refuse(where, f"hidden_act {config['hidden_act']!r} (a Llama GGUF means silu)")
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    return LlamaShape(
        context_length=int(config["max_position_embeddings"]),
        embedding_length=hidden,
        block_count=int(config["num_hidden_layers"]),
        feed_forward_length=int(config["intermediate_size"]),
        head_count=heads,
        head_count_kv=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        rope_theta=float(theta),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        vocab_size=int(config["vocab_size"]),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


def pre_tokenizer(tokenizer_json: Mapping[str, Any], where: str) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` name for this ``tokenizer.json``; refuses others.

    Only byte-level BPE with GPT-2's split (llama.cpp's and transformers' ``gpt-2``) is
    written: the tokenizer then splits and merges exactly as the saved one does.
    """
    model = tokenizer_json.get("model") or {}
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if model.get("type") != "BPE":
        raise _refuse(where, f"its tokenizer is {model.get('type')!r}; only byte-level BPE "
                             "(tokenizer.json) is supported")
    if tokenizer_json.get("normalizer") is not None or pre.get("type") != "ByteLevel" \
            or not pre.get("use_regex", True) or pre.get("add_prefix_space", False):
        raise _refuse(where, f"its pre-tokenizer {json.dumps(pre)} is not GPT-2's byte-level "
                             "split (ByteLevel, use_regex, no prefix space, no normalizer)")
    return "gpt-2"


def tensor_type(gguf_name: str, shape: tuple[int, ...],
                wanted: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    """What one tensor is stored as: llama.cpp's rules for a file of type ``wanted``.

    1-D tensors (the norms) stay f32; a row that is not a whole number of quantization blocks
    falls back to f16, as llama.cpp's converter does.
    """
    del gguf_name  # every 2-D Llama weight is treated alike, as llama.cpp's MOSTLY_* types do
    if len(shape) < 2 or wanted == gguf.GGMLQuantizationType.F32:
        return gguf.GGMLQuantizationType.F32
    block, _ = gguf.GGML_QUANT_SIZES[wanted]
    if shape[-1] % block:
        return gguf.GGMLQuantizationType.F16
    return wanted


def permute_qk(weights: npt.NDArray[np.float32], n_head: int) -> npt.NDArray[np.float32]:
    """llama.cpp's ``LlamaModel.permute``: HF's rotate-half rows -> interleaved pairs."""
    rows = weights.shape[0]
    return (weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def check_exportable(model_dir: Path) -> LlamaShape:
    """Refuse, before any work, a model or tokenizer this writer does not support."""
    shape = llama_shape(json.loads((model_dir / "config.json").read_text()), str(model_dir))
    tok = model_dir / "tokenizer.json"
    if not tok.is_file():
        raise _refuse(str(model_dir), "it has no tokenizer.json (a sentencepiece-only tokenizer)")
    pre_tokenizer(json.loads(tok.read_text()), str(model_dir))
    return shape


def _tensors(model_dir: Path) -> Iterator[tuple[str, npt.NDArray[np.float32]]]:
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise Refused(f"no *.safetensors weights in {model_dir}",
                      hint="export a merged model first (it is saved as safetensors)")
    for f in files:
        with safe_open(str(f), framework="numpy") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open has keys(), not __iter__
                yield key, np.asarray(st.get_tensor(key), dtype=np.float32)


def _vocab(model_dir: Path,
           n_vocab: int) -> tuple[list[str], list[gguf.TokenType], dict[str, bool]]:
    """Tokens, their types, and whether BOS / EOS are added (llama.cpp's ``get_vocab_base``)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    by_id = {i: t for t, i in tok.get_vocab().items()}
    added = tok.added_tokens_decoder
    tokens: list[str] = []
    types: list[gguf.TokenType] = []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        if i in added:
            types.append(gguf.TokenType.CONTROL if added[i].special
                         else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    # Whether BOS / EOS are added is read from what the tokenizer does, not from a config flag.
    probe = list(tok("a")["input_ids"])
    adds = {"bos": tok.bos_token_id is not None and probe[:1] == [tok.bos_token_id],
            "eos": tok.eos_token_id is not None and probe[-1:] == [tok.eos_token_id]}
    return tokens, types, adds


def write_gguf(model_dir: Path, out_file: Path, gguf_type: str, name: str) -> None:
    """Write the merged safetensors model in ``model_dir`` to ``out_file`` as GGUF."""
    shape = check_exportable(model_dir)
    wanted, file_type = GGUF_TYPES[gguf_type]
    arch = gguf.MODEL_ARCH.LLAMA
    w = gguf.GGUFWriter(out_file, gguf.MODEL_ARCH_NAMES[arch])
    w.add_name(name)
    w.add_context_length(shape.context_length)
    w.add_embedding_length(shape.embedding_length)
    w.add_block_count(shape.block_count)
    w.add_feed_forward_length(shape.feed_forward_length)
    w.add_head_count(shape.head_count)
    w.add_head_count_kv(shape.head_count_kv)
    w.add_rope_dimension_count(shape.head_dim)
    if shape.head_dim != shape.embedding_length // shape.head_count:
        w.add_key_length(shape.head_dim)
        w.add_value_length(shape.head_dim)
    w.add_rope_freq_base(shape.rope_theta)
    w.add_layer_norm_rms_eps(shape.rms_norm_eps)
    w.add_vocab_size(shape.vocab_size)
    w.add_file_type(file_type)
    if wanted not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, types, adds = _vocab(model_dir, shape.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre_tokenizer(json.loads((model_dir / "tokenizer.json").read_text()),
                                      str(model_dir)))
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    special.add_special_token.update(adds)
    special.add_to_gguf(w, quiet=True)

    names = gguf.get_tensor_name_map(arch, shape.block_count)
    for hf_name, data in _tensors(model_dir):
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise _refuse(str(model_dir), f"tensor {hf_name!r} has no Llama GGUF name")
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = permute_qk(data, shape.head_count)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = permute_qk(data, shape.head_count_kv)
        qtype = tensor_type(gguf_name, data.shape, wanted)
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(gguf_name, data)
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(gguf_name, data.astype(np.float16))
        else:
            w.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
