"""Request bodies of the OpenAI routes: parsed, and the fields the gateway reads (or that
bound the engine's work) checked, each refusal a :class:`BadRequest` naming its field;
vLLM checks the rest. Pure: no I/O, no state."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from serving.gateway import openapi
from serving.gateway.errors import NESTED_TOO_DEEPLY

Kind = Literal["chat", "completions"]


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


# Fields the gateway checks (it reads them, or they bound the engine's work); vLLM checks
# the rest. bool is excluded from the integers, as JSON Schema does.
_COUNTS = ("max_tokens", "max_completion_tokens", "n")


def parse_request(raw: bytes, kind: Kind) -> dict[str, Any]:
    """The body as a dict, with the fields the gateway reads checked; vLLM checks the rest."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"The request body is not valid JSON: {e}") from e
    except RecursionError as e:
        raise BadRequest(NESTED_TOO_DEEPLY) from e
    if not isinstance(body, dict):
        raise BadRequest(f"The request body must be a JSON object, not {_json_type(body)}.")
    if b"\\ud" in raw or b"\\uD" in raw:  # only a \u escape writes a lone surrogate
        _refuse_lone_surrogates(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: a model name, MODEL:STAGE or MODEL@vN.", "model")
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) for m in messages
        ):
            raise BadRequest("'messages' must be a non-empty array of message objects.",
                             "messages")
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, (str, list)) or not prompt:
            # vLLM refuses an empty one too, with a message about prompt_embeds.
            raise BadRequest("'prompt' is required: a non-empty string or array.", "prompt")
    for name, types in (("stream", bool), ("user", str), ("stream_options", dict)):
        value = body.get(name)
        if value is not None and not isinstance(value, types):
            raise BadRequest(f"'{name}' must be a {_JSON_NAMES[types]}, not "
                             f"{_json_type(value)}.", name)
    for name in _COUNTS:
        value = body.get(name)
        if type(value) is float and value.is_integer():
            # JSON Schema counts 1024.0 as an integer, as vLLM's pydantic models do.
            value = body[name] = int(value)
        if value is not None and (type(value) is not int or value < 1):
            raise BadRequest(f"'{name}' must be a whole number of at least 1, got "
                             f"{_shown(value)}.", name)
    if (body.get("n") or 1) > openapi.MAX_CHOICES:  # null is OpenAI's default, 1
        raise BadRequest(f"'n' is {_shown(body['n'])}; ask for at most {openapi.MAX_CHOICES} "
                         "choices in one request, as OpenAI allows.", "n")
    return body


_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_lone_surrogates(body: dict[str, Any]) -> None:
    """JSON lets a string hold half a UTF-16 pair ("\\ud800"); it is no text any tokenizer
    reads, and vLLM answers it with a 500. A whole pair parses to one character and passes."""
    for name, value in body.items():
        stack: list[Any] = [name, value]
        while stack:
            node = stack.pop()
            if isinstance(node, str) and _SURROGATE.search(node):
                shown = name if not _SURROGATE.search(name) else None
                raise BadRequest(f"'{shown or 'a field name'}' holds a lone UTF-16 surrogate "
                                 "(an unpaired \\ud800-\\udfff escape), which is not text; "
                                 "send valid Unicode.", shown)
            if isinstance(node, dict):
                stack.extend(node.keys())
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)


def check_max_tokens(body: dict[str, Any], max_model_len: int) -> None:
    """A completion longer than the engine's context cannot be served whatever the prompt:
    refused here, naming the field, rather than sent to the engine."""
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if isinstance(value, int) and value > max_model_len:
            raise BadRequest(
                f"'{name}' is {_shown(value)}, more than this model's context of "
                f"{max_model_len} tokens (prompt and completion together); ask for at most "
                f"{max_model_len} minus the prompt's tokens.", name)


_JSON_NAMES: dict[type, str] = {bool: "boolean", str: "string", dict: "object"}


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _shown(value: object) -> str:
    """A value as it would appear in JSON, cut short (a message never echoes a whole body)."""
    text = json.dumps(value) if not isinstance(value, (list, dict)) else _json_type(value)
    return text if len(text) <= 40 else text[:37] + "..."
