"""The gateway's prompt tokenizer (tokenizers + jinja2) gives transformers' ids exactly, on
the real tiny model's files and on templates that use what transformers' environment adds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest

from serving.gateway.prompt_tokens import PromptTokenizer, TokenizerUnavailable

CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Where is my order?"}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "héllo <b>x</b> {\"a\": 1} \u4f60\u597d"},
     {"role": "assistant", "content": "ok"},
     {"role": "user", "content": "again\n\n   with  spaces\t"}],
    [{"role": "user", "content": ""}],
]

# Uses what transformers' template environment provides beyond plain jinja2: its tojson
# (no HTML escaping), raise_exception, loop controls, `{% generation %}`, the special tokens.
RICH_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'tool' %}"
    "{{ raise_exception('no tools') }}{% endif %}{% if m['content'] == 'skip' %}{% continue %}"
    "{% endif %}{% if m['role'] == 'assistant' %}{% generation %}{{ m | tojson }}"
    "{% endgeneration %}{% else %}{{ m['role'] }}: {{ m | tojson(indent=2) }}{{ eos_token }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture
def model_with(tiny_model_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    """A copy of the tiny model's tokenizer files, its chat template replaced or removed."""

    def make(template: str | None, *, in_config: bool = False,
             tokenizer_json: bool = True) -> Path:
        out = tmp_path / f"model-{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
            shutil.copy(tiny_model_dir / name, out / name)
        if not tokenizer_json:
            (out / "tokenizer.json").unlink()
        if template is not None and in_config:
            config = json.loads((out / "tokenizer_config.json").read_text())
            config["chat_template"] = [{"name": "other", "template": "x"},
                                       {"name": "default", "template": template}]
            (out / "tokenizer_config.json").write_text(json.dumps(config))
        elif template is not None:
            (out / "chat_template.jinja").write_text(template)
        return out

    return make


def transformers_ids(model: Path, messages: list[dict[str, Any]] | None = None,
                     text: str | None = None) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
    if messages is not None:
        enc: Any = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           return_dict=True)
        return [int(i) for i in enc["input_ids"]]
    return [int(i) for i in tok(text, add_special_tokens=False)["input_ids"]]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_chat_ids_are_transformers_ids(tiny_model_dir: Path,
                                       messages: list[dict[str, Any]]) -> None:
    ours = PromptTokenizer.load(str(tiny_model_dir)).chat_ids(messages)
    assert ours == transformers_ids(tiny_model_dir, messages)
    assert len(ours) > 2


@pytest.mark.parametrize("text", ["Where is  my order?", "", "<|end|> inside\ttext \u00e9"])
def test_text_ids_are_transformers_ids(tiny_model_dir: Path, text: str) -> None:
    assert PromptTokenizer.load(str(tiny_model_dir)).text_ids(text) == transformers_ids(
        tiny_model_dir, text=text)


@pytest.mark.parametrize("in_config", [False, True], ids=["jinja-file", "config-list"])
def test_a_template_using_transformers_extras_renders_alike(
        model_with: Callable[..., Path], in_config: bool) -> None:
    model = model_with(RICH_TEMPLATE, in_config=in_config)
    messages = [*CONVERSATIONS[1], {"role": "user", "content": "skip"}]
    ours = PromptTokenizer.load(str(model)).chat_ids(messages)
    assert ours == transformers_ids(model, messages)
    with pytest.raises(jinja2.exceptions.TemplateError, match="no tools"):
        PromptTokenizer.load(str(model)).chat_ids([{"role": "tool", "content": "x"}])


def test_what_it_cannot_read_is_refused_with_the_reason(
        model_with: Callable[..., Path]) -> None:
    with pytest.raises(TokenizerUnavailable, match=r"has no tokenizer\.json"):
        PromptTokenizer.load(str(model_with(RICH_TEMPLATE, tokenizer_json=False)))
    bare = PromptTokenizer.load(str(model_with(None)))
    assert bare.text_ids("hi")  # completions still count
    with pytest.raises(TokenizerUnavailable, match="no chat template"):
        bare.chat_ids(CONVERSATIONS[0])


def test_loading_it_imports_neither_transformers_nor_torch(tiny_model_dir: Path) -> None:
    code = ("import sys; from serving.gateway.prompt_tokens import PromptTokenizer; "
            f"PromptTokenizer.load({str(tiny_model_dir)!r}).chat_ids("
            "[{'role': 'user', 'content': 'hi'}]); "
            "print(sorted(m for m in ('transformers', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == "[]"
