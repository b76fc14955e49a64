"""A tiny Llama built locally, for the example workspace, the demo and the tests.

No model can be downloaded on the project's machines, so this builds one: a
byte-level BPE tokenizer trained with ``tokenizers`` on a small built-in
corpus, a chat template, and a randomly initialised ``LlamaForCausalLM``
(hidden 128, 2 layers, 4 heads of 32: about 0.6 M parameters) saved as
safetensors. The same seed gives the same bytes. vLLM's CPU attention needs a
head size of 32, 64, 80, ...; 32 is the smallest.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from recipes.core.fsutil import atomic_dir

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

# A chat template in the style of Zephyr: each turn is `<|role|>\ncontent<|end|>\n`.
# `{% generation %}` marks the assistant's tokens so trainers can mask the rest.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_WORDS = (  # noqa: SIM905 - a paragraph of words reads better than a list
    "the a an of to in is it that for on with as are was be by this at or from have not "
    "but what all were when we there can your which their if do will each how up about out "
    "many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find "
    "long down day did get come made may part question answer explain describe tell why "
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu "
    "model data train deploy version stage canary production staging rollout traffic user "
    "support bot help order refund account password shipping invoice price weather city "
    "color red green blue yellow black white number one two three four five six seven eight "
    "nine ten hello thanks please good bad yes no sure okay great fine summary topic"
).split()


@dataclass(frozen=True)
class TinyModelConfig:
    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    head_dim: int = 32
    max_position_embeddings: int = 1024
    seed: int = 0


def sample_sentences(seed: int, lines: int) -> list[str]:
    """Random sentences over the tokenizer's training words (general text for examples)."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(lines):
        n = rng.randint(3, 16)
        words = [rng.choice(_WORDS) for _ in range(n)]
        sentence = " ".join(words)
        end = rng.choice([".", "?", "!", ":"])
        out.append(f"{sentence.capitalize()}{end} {rng.randint(0, 999)}")
    return out


def _corpus(seed: int, lines: int = 4000) -> list[str]:
    out = sample_sentences(seed, lines)
    # Every byte-level symbol appears at least once, so any input tokenizes.
    out.append("".join(chr(i) for i in range(32, 127)))
    return out


def build_tokenizer(out_dir: Path, cfg: TinyModelConfig) -> int:
    """Train and save the tokenizer; returns the id of the end-of-turn token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(cfg.seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<pad>",
        unk_token=None,
        model_max_length=cfg.max_position_embeddings,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    end_id = fast.convert_tokens_to_ids("<|end|>")
    if not isinstance(end_id, int):  # a list only when given a list
        raise TypeError(f"unexpected id for <|end|>: {end_id!r}")
    return end_id


def build_tiny_llama(out_dir: Path, cfg: TinyModelConfig | None = None) -> Path:
    """Write a tiny Llama (config, safetensors weights, tokenizer) to ``out_dir``.

    Deterministic: the same config and seed give the same bytes. The model is
    built in a temporary sibling folder and renamed into place, so a crash
    never leaves a half-written model behind; an existing ``out_dir`` is
    replaced.
    """
    cfg = cfg or TinyModelConfig()
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        _build_into(tmp, cfg)
    return out_dir


def _build_into(out_dir: Path, cfg: TinyModelConfig) -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    end_id = build_tokenizer(out_dir, cfg)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=end_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    # The global RNG is restored afterwards: callers' own seeding is not ours to change.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id, eos_token_id=end_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model.save_pretrained(str(out_dir))
    finally:
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    (out_dir / "reg-tiny-model.json").write_text(
        json.dumps({"builder": "recipes.scaffold.tiny_model", "config": asdict(cfg)}, indent=2)
        + "\n"
    )

