"""Bad input, gateway: generated request bodies (malformed JSON bytes, wrong types for each
field, huge max_tokens/n/best_of, deep nesting, strings near the size limit, unicode with
lone surrogates, wrong content types) against a real gateway (uvicorn on loopback). Every
answer is an OpenAI-shaped 4xx, or for a body that passes validation the engine's 2xx;
never a 5xx, never a hang (each request has a timeout).

The engine behind it is a scripted upstream that answers like vLLM and records what reached
it (tests/support/fault_server.py), as in tests/serving/gateway/test_bad_input.py: the
session's real vLLM (tests/serving/conftest.py's ``stack``) is not reachable from this
folder, and a second engine would cost the suite a minute. The supervisor does not run.

Deterministic: hypothesis runs from a fixed seed (printed) without its example database.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from registry.deployments import Deployment
from registry.traffic import TrafficPolicy
from serving.config import ServeConfig
from serving.engines.process import EngineState
from serving.engines.state import EngineStatus
from tests.support.fault_server import (
    FaultServer,
    Request,
    chat_body,
    chunked,
    response,
    sse_events,
)
from tests.support.figures import record
from tests.support.gateway import Server, serve_in_thread
from tests.support.paths import REPO
from tests.support.sources import InMemorySource

SEED = 20261202
EXAMPLES = 300
MODEL = "support-bot"
ENGINE = "/base"
CONTEXT = 512  # the engine's --max-model-len
LIMIT = 64 * 1024  # the gateway's REG_MAX_BODY_BYTES here
PATHS = ("/v1/chat/completions", "/v1/completions")


def upstream(req: Request) -> list[bytes]:
    body = json.loads(req.body)
    if body.get("stream") is True:
        return chunked(sse_events(body["model"], ["hi", " there"]))
    return [response(chat_body(body["model"]))]


@dataclass
class Gateway:
    srv: Server
    engine: FaultServer
    http: httpx.Client

    def forwarded(self) -> int:
        return len([r for r in self.engine.requests if r.path.startswith("/v1/")])


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    """support-bot v1 (production) behind a real gateway, over the scripted engine."""
    from serving.gateway.app import create_app
    from serving.gateway.routing import build_catalogue

    deps = [Deployment(MODEL, 1, ("production",), "d1", ENGINE, CONTEXT)]
    policies = {MODEL: TrafficPolicy(MODEL, {"production": 100})}
    engine = FaultServer(upstream)
    srv = serve_in_thread(create_app(InMemorySource(deps, policies),
                                     ServeConfig(admin_token="t", max_body_bytes=LIMIT),
                                     manage_engines=False))
    srv.gateway.state.catalogue = build_catalogue(deps, policies, marker=1)
    srv.gateway.state.loaded_once = True
    srv.gateway.state.engines = {ENGINE: EngineStatus(
        key=ENGINE, url=engine.url, state=EngineState.ready, max_model_len=CONTEXT)}
    gw = Gateway(srv, engine, httpx.Client(timeout=30))
    yield gw
    gw.http.close()
    srv.stop()
    engine.stop()


@pytest.fixture(scope="module")
def error_schema() -> jsonschema.Draft202012Validator:
    """OpenAI's published ErrorResponse schema (the file tests/serving/conftest.py reads)."""
    defs = json.loads((REPO / "tests" / "support" / "openai-schemas.json").read_text())["$defs"]
    return jsonschema.Draft202012Validator({"$defs": defs, "$ref": "#/$defs/ErrorResponse"})


# ---------------------------------------------------------------- bodies

ODD = ["\ud800", "\udfff", "\x00", "\u202e", "\ufeff", "\U0001f600", "e\u0301", "\u2028"]
odd_text = st.lists(st.one_of(st.sampled_from(ODD), st.characters()), max_size=16).map(
    "".join)
huge_counts = st.sampled_from([0, -1, 1, CONTEXT, CONTEXT + 1, 2**31, 2**63, 10**30, 10**4000,
                               1.5, 8.0, 1e308, -0.0])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), huge_counts,
                    st.floats(allow_nan=False), odd_text)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(odd_text, inner, max_size=3)), max_leaves=8)
MESSAGES = [{"role": "user", "content": "hi"}]
FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "n", "best_of",
          "stream", "stream_options", "user", "temperature", "top_p", "stop", "logprobs",
          "seed", "tools", "response_format", "extra"]


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(path, raw body, content type)."""
    path = draw(st.sampled_from(PATHS))
    base: dict[str, Any] = {"model": MODEL, "max_tokens": 4}
    base.update({"messages": MESSAGES} if path == PATHS[0] else {"prompt": "hi"})
    kind = draw(st.sampled_from(["valid", "wrong-type", "counts", "deep", "near-limit",
                                 "bytes", "truncated", "unicode", "not-an-object"]))
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
    elif kind == "near-limit":
        size = LIMIT + draw(st.integers(-200, 200)) - len(json.dumps(base)) - 12
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
        base = draw(json_values)
    if draw(st.booleans()) and isinstance(base, dict) and kind == "valid":
        base["stream"] = True
    raw = json.dumps(base).encode()  # ensure_ascii: lone surrogates are \ud800 escapes
    ctype = draw(st.sampled_from(["application/json", "application/json", "text/plain",
                                  "application/x-www-form-urlencoded", "",
                                  "application/json; charset=latin-1", "multipart/form-data"]))
    return path, raw, ctype


def check_answer(r: httpx.Response, error_schema: jsonschema.Draft202012Validator) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/json", r.headers
        body = r.json()
        error = jsonschema.exceptions.best_match(error_schema.iter_errors(body))
        assert error is None, (error, body)
        assert len(body["error"]["message"]) < 400, "a message, not the body echoed"
    else:
        assert r.status_code == 200, r.text[:500]


def test_generated_bodies_get_openai_4xx_or_the_engines_answer_never_a_5xx(
    gateway: Gateway, error_schema: jsonschema.Draft202012Validator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: Counter[int] = Counter()

    # No shrinking: a failure is reported at once with the blob that replays it.
    @seed(SEED)
    @settings(max_examples=EXAMPLES, database=None, deadline=None, print_blob=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=bodies())
    def one(case: tuple[str, bytes, str]) -> None:
        path, raw, ctype = case
        before = gateway.forwarded()
        r = gateway.http.post(gateway.srv.url + path, content=raw,
                              headers={"content-type": ctype} if ctype else {})
        check_answer(r, error_schema)
        # What the gateway refused never reached the engine; what it served did.
        assert gateway.forwarded() == before + (r.status_code == 200)
        seen[r.status_code] += 1

    one()
    with capsys.disabled():
        print(f"\ngateway fuzz: hypothesis seed {SEED}, {EXAMPLES} bodies, no example "
              f"database; answers {dict(sorted(seen.items()))}")
    assert sum(seen.values()) == EXAMPLES
    assert seen[200] >= 20 and seen[400] >= 100 and seen[413] >= 1, seen
    record("bad input", "gateway bodies", EXAMPLES,
           f"bodies ({seen[200]} served, {EXAMPLES - seen[200]} refused 4xx), 0 5xx")


@pytest.mark.parametrize(("body", "status", "param"), [
    # JSON allows a lone surrogate; the routing key hashed it as UTF-8 and answered 500.
    pytest.param(b'{"model": "support-bot", "prompt": "hi", "user": "\\ud800"}', 200, None,
                 id="user-lone-surrogate"),
    # 1e308 is a whole number: the message once echoed all of its 309 digits.
    pytest.param(b'{"model": "support-bot", "prompt": "hi", "max_tokens": 1e308}', 400,
                 "max_tokens", id="max-tokens-1e308"),
    pytest.param(b'{"model": "support-bot", "prompt": "hi", "n": 1e308}', 400, "n",
                 id="n-1e308"),
])
def test_bodies_the_fuzzing_found(gateway: Gateway, error_schema: jsonschema.Draft202012Validator,
                                  body: bytes, status: int, param: str | None) -> None:
    r = gateway.http.post(gateway.srv.url + "/v1/completions", content=body,
                          headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    check_answer(r, error_schema)
    if param is not None:
        assert r.json()["error"]["param"] == param
