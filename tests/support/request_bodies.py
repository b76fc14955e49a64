"""Generated OpenAI request bodies, good and bad, and the check every answer to one must
pass: the bad-input suite sends them to a gateway over a scripted engine
(tests/reliability/test_gateway_fuzz.py) and to the live stack's real vLLM
(tests/serving/test_bad_input_live.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
from hypothesis import strategies as st

from tests.support.paths import REPO

PATHS = ("/v1/chat/completions", "/v1/completions")
MESSAGES = [{"role": "user", "content": "hi"}]
FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "n", "best_of",
          "stream", "stream_options", "user", "temperature", "top_p", "stop", "logprobs",
          "seed", "tools", "response_format", "extra"]
ODD = ["\ud800", "\udfff", "\x00", "\u202e", "\ufeff", "\U0001f600", "e\u0301", "\u2028"]

odd_text = st.lists(st.one_of(st.sampled_from(ODD), st.characters()), max_size=16).map(
    "".join)
huge_counts = st.sampled_from([0, -1, 1, 512, 513, 2**31, 2**63, 10**30, 10**4000, 1.5, 8.0,
                               1e308, -0.0])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), huge_counts,
                    st.floats(allow_nan=False), odd_text)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(odd_text, inner, max_size=3)), max_leaves=8)
CONTENT_TYPES = ["application/json", "application/json", "text/plain",
                 "application/x-www-form-urlencoded", "", "application/json; charset=latin-1",
                 "multipart/form-data"]


@st.composite
def bodies(draw: st.DrawFn, model: str, limit: int | None = None) -> tuple[str, bytes, str]:
    """(path, raw body, content type) for ``model``; ``limit`` (the gateway's body limit)
    adds bodies within a few hundred bytes of it either side."""
    path = draw(st.sampled_from(PATHS))
    base: dict[str, Any] = {"model": model, "max_tokens": 4}
    base.update({"messages": MESSAGES} if path == PATHS[0] else {"prompt": "hi"})
    kinds = ["valid", "wrong-type", "counts", "deep", "bytes", "truncated", "unicode",
             "not-an-object"]
    kind = draw(st.sampled_from(kinds + (["near-limit"] if limit is not None else [])))
    body: Any = base
    if kind == "wrong-type":
        for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
            base[name] = draw(json_values)
    elif kind == "counts":
        for name in draw(st.lists(st.sampled_from(["max_tokens", "max_completion_tokens", "n",
                                                   "best_of"]), min_size=1, max_size=3)):
            base[name] = draw(huge_counts)
    elif kind == "deep":
        depth = draw(st.sampled_from([10, 100, 900, 1000, 1100, 5000, 20_000]))
        field = draw(st.sampled_from(["messages", "prompt", "extra", "stop"]))
        text = json.dumps(base)[:-1] + f', "{field}": ' + "[" * depth + "]" * depth + "}"
        return path, text.encode(), "application/json"
    elif kind == "near-limit" and limit is not None:
        size = limit + draw(st.integers(-200, 200)) - len(json.dumps(base)) - 12
        base[draw(st.sampled_from(["user", "extra", "prompt"]))] = "a" * max(0, size)
    elif kind == "bytes":
        return path, draw(st.binary(max_size=64)), "application/json"
    elif kind == "truncated":
        whole = json.dumps(base).encode()
        return path, whole[:draw(st.integers(0, len(whole) - 1))], "application/json"
    elif kind == "unicode":
        base[draw(st.sampled_from(["model", "user", "extra", "stop"]))] = draw(odd_text)
        if path == PATHS[0]:
            base["messages"] = [{"role": "user", "content": draw(odd_text)}]
    elif kind == "not-an-object":
        body = draw(json_values)
    if kind == "valid" and draw(st.booleans()):
        base["stream"] = True
    raw = json.dumps(body).encode()  # ensure_ascii: lone surrogates are \ud800 escapes
    return path, raw, draw(st.sampled_from(CONTENT_TYPES))


def error_validator() -> jsonschema.Draft202012Validator:
    """OpenAI's published ErrorResponse schema (the file tests/serving/conftest.py reads)."""
    defs = json.loads((REPO / "tests" / "support" / "openai-schemas.json").read_text())["$defs"]
    return jsonschema.Draft202012Validator({"$defs": defs, "$ref": "#/$defs/ErrorResponse"})


def check_answer(r: httpx.Response, errors: jsonschema.Draft202012Validator, *,
                 longest: int | None = 400) -> None:
    """Never a 5xx; a 4xx in OpenAI's error shape with a message (not the body echoed: at
    most ``longest`` characters; vLLM's own messages quote the input they refuse);
    anything else a 200."""
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/json", r.headers
        body = r.json()
        error = jsonschema.exceptions.best_match(errors.iter_errors(body))
        assert error is None, (error, body)
        message = body["error"]["message"]
        assert longest is None or len(message) < longest, message[:1000]
    else:
        assert r.status_code == 200, r.text[:500]
