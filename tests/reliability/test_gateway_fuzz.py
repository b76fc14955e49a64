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

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.support.fault_server import (
    Request,
    chat_body,
    chunked,
    response,
    sse_events,
)
from tests.support.figures import record
from tests.support.request_bodies import bodies, check_answer, error_validator
from tests.support.scripted_gateway import MODEL, Gateway, scripted_gateway

SEED = 20261202
EXAMPLES = 300
LIMIT = 64 * 1024  # the gateway's REG_MAX_BODY_BYTES here


def upstream(req: Request) -> list[bytes]:
    body = json.loads(req.body)
    if body.get("stream") is True:
        return chunked(sse_events(body["model"], ["hi", " there"]))
    return [response(chat_body(body["model"]))]


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    """support-bot v1 (production) behind a real gateway, over the scripted engine."""
    with scripted_gateway(upstream, admin_token="t", max_body_bytes=LIMIT) as gw:
        yield gw


@pytest.fixture(scope="module")
def error_schema() -> jsonschema.Draft202012Validator:
    return error_validator()


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
    @given(case=bodies(MODEL, LIMIT))
    def one(case: tuple[str, bytes, str]) -> None:
        path, raw, ctype = case
        before = len(gateway.forwarded())
        r = gateway.http.post(gateway.srv.url + path, content=raw,
                              headers={"content-type": ctype} if ctype else {})
        check_answer(r, error_schema)
        # What the gateway refused never reached the engine; what it served did.
        assert len(gateway.forwarded()) == before + (r.status_code == 200)
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
    # JSON allows half a UTF-16 pair: the routing key hashed it as UTF-8 and answered 500,
    # and vLLM answers 500 to one in "stop". No tokenizer reads it: a 400 naming the field.
    pytest.param(b'{"model": "support-bot", "prompt": "hi", "user": "\\ud800"}', 400, "user",
                 id="user-lone-surrogate"),
    pytest.param(b'{"model": "support-bot", "prompt": "hi", "stop": ["a\\uDFFF"]}', 400,
                 "stop", id="stop-lone-surrogate"),
    pytest.param(b'{"model": "support-bot", "prompt": "hi \\ud83d\\ude00"}', 200, None,
                 id="a-whole-pair-is-text"),
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
