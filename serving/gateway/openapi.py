"""OpenAPI fragments for the gateway's routes (the app reads bodies as bytes, so the
request and response shapes are documented here rather than inferred from models).

They are a faithful subset of OpenAI's published schemas: what the gateway itself
checks (``model``, ``messages``/``prompt``, ``stream``, ``user``) plus the common
sampling fields. Other fields pass through to vLLM, which validates them, so extra
properties are allowed. Every status the gateway can answer is listed, with the
OpenAI error body.
"""

from __future__ import annotations

import copy
from typing import Any

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

# OpenAI's own ceiling on choices per request; vLLM has none, and one request asking for a
# million choices would hold the engine. The gateway refuses more (openai_api).
MAX_CHOICES = 128

_ERRORS = {
    "400": "The body is not valid JSON (or nested too deeply), a field has the wrong type, "
           f"max_tokens is beyond the model's context, or n asks for more than {MAX_CHOICES} "
           "choices; `param` names the field.",
    "401": "An API key is required (REG_API_KEYS) and was missing or wrong.",
    "404": "Unknown model, stage or version; the message lists what exists.",
    "413": "The body is larger than the gateway accepts (REG_MAX_BODY_BYTES).",
    "429": "Too many requests in flight; retry after the Retry-After header's seconds.",
    "502": "The engine failed while answering.",
    "503": "The engine is down or restarting; the message says why.",
}

_SAMPLING: dict[str, Any] = {
    "model": {"type": "string", "minLength": 1,
              "description": "MODEL (traffic policy), MODEL:STAGE or MODEL@vN."},
    "stream": {"type": ["boolean", "null"]},
    "stream_options": {"type": ["object", "null"],
                       "properties": {"include_usage": {"type": "boolean"}}},
    "user": {"type": ["string", "null"], "description": "Routing key: the same user always "
             "reaches the same version while the policy is unchanged."},
    "max_tokens": {"type": ["integer", "null"], "minimum": 1},
    "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
    "n": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_CHOICES,
          "description": f"Choices to generate (at most {MAX_CHOICES}, as OpenAI allows)."},
    "temperature": {"type": ["number", "null"], "minimum": 0},
}

_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant"]},
        "content": {"type": "string"},
    },
}

_CHOICE_USAGE = {
    "type": "object",
    "properties": {"prompt_tokens": {"type": "integer"},
                   "completion_tokens": {"type": "integer"},
                   "total_tokens": {"type": "integer"}},
}


def _responses(ok_schema: dict[str, Any], *, streams: bool) -> dict[str, Any]:
    ok_content: dict[str, Any] = {"application/json": {"schema": ok_schema}}
    if streams:
        ok_content["text/event-stream"] = {
            "schema": {"type": "string", "description": "SSE: `data: {chunk}` events, then "
                       "`data: [DONE]`."}
        }
    out: dict[str, Any] = {
        "200": {"description": "The answer. Headers x-reg-version and x-reg-stage say which "
                "version served it.", "content": ok_content}
    }
    for code, why in _ERRORS.items():
        out[code] = {"description": why, "content": {"application/json": {"schema": ERROR}}}
    return out


# vLLM, like OpenAI, refuses stream_options set (non-empty) on a request that does not
# stream: the schema says so, so a client (or a fuzzer) reading it is not surprised.
_STREAM_OPTIONS_NEED_STREAM: dict[str, Any] = {
    "if": {"required": ["stream_options"],
           "properties": {"stream_options": {"type": "object", "minProperties": 1}}},
    "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object", "required": required, "properties": properties,
            **_STREAM_OPTIONS_NEED_STREAM,
        }}},
    }


# What chat/completions and completions answer (without streaming): the same envelope.
_COMPLETION: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"}, "object": {"type": "string"},
        "created": {"type": "integer"}, "model": {"type": "string"},
        "choices": {"type": "array"}, "usage": _CHOICE_USAGE,
    },
}


def chat_completions() -> dict[str, Any]:
    props = {**_SAMPLING, "messages": {"type": "array", "minItems": 1, "items": _MESSAGE}}
    return {"requestBody": _body(props, ["model", "messages"]),
            "responses": _responses(_COMPLETION, streams=True)}


def completions() -> dict[str, Any]:
    # vLLM refuses an empty prompt.
    props = {**_SAMPLING, "prompt": {"type": "string", "minLength": 1}}
    return {"requestBody": _body(props, ["model", "prompt"]),
            "responses": _responses(_COMPLETION, streams=True)}


def models() -> dict[str, Any]:
    ok = {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {
                "type": "object", "required": ["id", "object", "created", "owned_by"],
                "properties": {"id": {"type": "string"}, "object": {"type": "string"},
                               "created": {"type": "integer"}, "owned_by": {"type": "string"}},
            }},
        },
    }
    return {"responses": {
        "200": {"description": "Models, stage pins and version pins.",
                "content": {"application/json": {"schema": ok}}},
        "401": {"description": _ERRORS["401"],
                "content": {"application/json": {"schema": ERROR}}},
    }}


def simple(description: str) -> dict[str, Any]:
    return {"responses": {"200": {"description": description, "content": {
        "application/json": {"schema": {"type": "object"}}}}}}


def ready() -> dict[str, Any]:
    body = {"type": "object", "required": ["status", "engines"],
            "properties": {"status": {"type": "string"}, "engines": {"type": "object"}}}
    return {"responses": {
        "200": {"description": "Engines up and adapters synced.",
                "content": {"application/json": {"schema": body}}},
        "503": {"description": "Not ready; the body says why.",
                "content": {"application/json": {"schema": body}}},
    }}


def metrics() -> dict[str, Any]:
    return {"responses": {"200": {"description": "Prometheus text exposition format.",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}


def status() -> dict[str, Any]:
    """``GET /api/status``: the 200 body's schema comes from its pydantic model."""
    return {"responses": {"401": {"description": _ERRORS["401"],
                                  "content": {"application/json": {"schema": ERROR}}}}}


def with_context_limit(schema: dict[str, Any], context: int | None) -> dict[str, Any]:
    """``schema`` with ``max_tokens``'s ``maximum`` set to ``context``: the largest context
    of the engines serving now (known only once they run, so set per render). A model with
    a smaller context refuses more, naming the field in its 400."""
    if context is None:
        return schema
    out = copy.deepcopy(schema)
    for path in ("/v1/chat/completions", "/v1/completions"):
        body = out.get("paths", {}).get(path, {}).get("post", {}).get("requestBody", {})
        props = body.get("content", {}).get("application/json", {}).get("schema", {}).get(
            "properties", {})
        for name in ("max_tokens", "max_completion_tokens"):
            if name in props:
                props[name] = {**props[name], "maximum": context}
    return out
