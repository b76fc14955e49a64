"""A base model's prompts as token ids, for the drift worker, without transformers.

Training tokenises with transformers; the gateway must count the same ids, but importing
transformers (and through it torch) in the gateway costs seconds of a core at start-up,
while the proxy is already answering, and hundreds of MB of memory for as long as it
runs. So this module reads the same files with the libraries transformers itself uses
underneath: ``tokenizers`` (the Rust tokenizer behind every fast tokenizer) for
``tokenizer.json``, and jinja2 for the chat template, in the environment transformers
renders templates in (``transformers.utils.chat_template_utils._compile_jinja_template``:
sandboxed, ``trim_blocks``, ``lstrip_blocks``, loop controls, its ``tojson``,
``raise_exception`` and ``strftime_now``), with the special tokens as template variables.
tests/serving/gateway/test_prompt_tokens.py holds it to transformers' ids on the same
conversations. A base model with no ``tokenizer.json`` (a slow, sentencepiece-only
tokenizer) is refused with that reason; the drift report then says so for its versions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token",
                  "cls_token", "mask_token")


class TokenizerUnavailable(Exception):
    """The base model's folder has no tokenizer this module can read."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # transformers' override: jinja's own tojson escapes HTML characters.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _GenerationBlock(jinja2.ext.Extension):
    # transformers' AssistantTracker adds `{% generation %}` blocks (to mask what the
    # assistant said); rendering a prompt only needs their body passed through.
    tags = {"generation"}  # noqa: RUF012 (jinja2.ext.Extension declares it a set)

    def parse(self, parser: Any) -> Any:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])  # an AddedToken as tokenizer_config.json writes it
    return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _chat_template(folder: Path, config: Mapping[str, Any]) -> str | None:
    # As transformers: chat_template.jinja wins over the config's key; a list of named
    # templates uses the one called "default".
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


class PromptTokenizer:
    """Token ids of chat and completion prompts, as the model's training tokenised them."""

    def __init__(self, tokenizer: Tokenizer, chat_template: str | None,
                 special_tokens: Mapping[str, str]) -> None:
        self._tokenizer = tokenizer
        self._template = None if chat_template is None else _environment().from_string(
            chat_template)
        self._special = dict(special_tokens)

    @classmethod
    def load(cls, base_model_path: str) -> PromptTokenizer:
        folder = Path(base_model_path)
        file = folder / "tokenizer.json"
        if not file.is_file():
            raise TokenizerUnavailable(f"{folder} has no tokenizer.json (a fast tokenizer)")
        config = _read_json(folder / "tokenizer_config.json")
        specials = _read_json(folder / "special_tokens_map.json")
        special: dict[str, str] = {}
        for name in SPECIAL_TOKENS:
            text = _token_text(config.get(name, specials.get(name)))
            if text is not None:
                special[name] = text
        return cls(Tokenizer.from_file(str(file)), _chat_template(folder, config), special)

    def chat_ids(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """The conversation through the chat template with the generation prompt."""
        if self._template is None:
            raise TokenizerUnavailable("the tokenizer has no chat template")
        text = self._template.render(messages=list(messages), add_generation_prompt=True,
                                     tools=None, documents=None, **self._special)
        return self.text_ids(text)

    def text_ids(self, text: str) -> list[int]:
        """``text`` without special tokens added (a rendered template carries its own)."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
