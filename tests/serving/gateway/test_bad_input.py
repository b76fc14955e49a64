"""Bad and hostile request bodies: an OpenAI-shaped 4xx naming the field, never a 500, and
nothing sent to the engine; bodies over the size limit refused before they are read.

The gateway runs for real (uvicorn on loopback) over a scripted upstream that answers like
vLLM (tests/support/fault_server.py) and records what reached it; the supervisor does not
run (the tests set the engine's state).
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from serving.gateway.errors import NESTED_TOO_DEEPLY
from tests.support.fault_server import Request, chat_body, response
from tests.support.scripted_gateway import CONTEXT, MODEL, Gateway, scripted_gateway

TOKEN = "admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
LIMIT = 64 * 1024  # the tests' REG_MAX_BODY_BYTES
MESSAGES = [{"role": "user", "content": "hi"}]


def upstream(req: Request) -> list[bytes]:
    return [response(chat_body(json.loads(req.body)["model"]))]


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def make_gateway() -> Iterator[GatewayFactory]:
    """make_gateway(**ServeConfig fields) -> support-bot v1 (production) behind a gateway."""
    with contextlib.ExitStack() as stack:
        yield lambda **config: stack.enter_context(scripted_gateway(
            upstream, **{"admin_token": TOKEN, "max_body_bytes": LIMIT, **config}))


@pytest.fixture
def gateway(make_gateway: GatewayFactory) -> Gateway:
    return make_gateway()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def assert_openai_error(r: httpx.Response, status: int, validate: Callable[[str, Any], None],
                        param: str | None = None, match: str = "") -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    validate("ErrorResponse", r.json())
    err: dict[str, Any] = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert match in err["message"]
    return err


def test_a_body_nested_5000_deep_is_a_400_not_a_500(
    gateway: Gateway, validate_openai: Callable[[str, Any], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        for body in (nested(5000).encode(),
                     b'{"model": "support-bot", "messages": ' + nested(5000).encode() + b"}"):
            for path in ("/v1/chat/completions", "/v1/completions"):
                assert_openai_error(gateway.post(path, body), 400, validate_openai,
                                    match=NESTED_TOO_DEEPLY)
    assert gateway.forwarded() == []
    assert [r.getMessage() for r in caplog.records] == []  # no traceback in the log


def test_the_openai_client_gets_a_bad_request_naming_max_tokens(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.srv.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="more than this model's context") as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=100_000)
    assert e.value.param == "max_tokens" and e.value.code == "invalid_request"
    assert gateway.forwarded() == []


def test_every_depth_near_the_parsers_limit_is_answered_never_a_500(gateway: Gateway) -> None:
    """Around the interpreter's recursion limit a body can parse and then fail to be
    written for the engine a few frames deeper: either way, a 400 or the engine's answer."""
    seen = set()
    for depth in range(900, 1060):
        body = ('{"model": "support-bot", "messages": [{"role": "user", "content": "hi"}], '
                f'"x": {nested(depth)}}}').encode()
        r = gateway.post("/v1/chat/completions", body)
        seen.add(r.status_code)
        assert r.status_code in (200, 400), (depth, r.status_code, r.text)
    assert seen == {200, 400}  # the sweep crossed the limit


@pytest.mark.parametrize(("path", "body", "param", "match"), [
    pytest.param("chat", b"{not json", None, "not valid JSON", id="malformed"),
    pytest.param("chat", b"\xff\xfe\x00", None, "not valid JSON", id="not-utf8"),
    pytest.param("chat", b"", None, "not valid JSON", id="empty"),
    pytest.param("chat", b"[1, 2]", None, "must be a JSON object, not an array", id="array"),
    pytest.param("chat", b'"hi"', None, "must be a JSON object, not a string", id="string"),
    pytest.param("chat", b"null", None, "must be a JSON object, not null", id="null"),
    pytest.param("chat", b'{"max_tokens": 1' + b"0" * 5000 + b"}", None, "not valid JSON",
                 id="number-of-5000-digits"),
    pytest.param("chat", {"messages": MESSAGES}, "model", "'model' is required",
                 id="no-model"),
    pytest.param("chat", {"model": 7, "messages": MESSAGES}, "model", "'model' is required",
                 id="model-number"),
    pytest.param("chat", {"model": MODEL, "messages": "hi"}, "messages",
                 "'messages' must be a non-empty array", id="messages-string"),
    pytest.param("chat", {"model": MODEL, "messages": [1]}, "messages",
                 "'messages' must be a non-empty array", id="message-number"),
    pytest.param("completions", {"model": MODEL}, "prompt", "'prompt' is required",
                 id="no-prompt"),
    pytest.param("completions", {"model": MODEL, "prompt": ""}, "prompt",
                 "'prompt' is required: a non-empty string", id="empty-prompt"),
    pytest.param("chat", {"model": MODEL, "messages": MESSAGES, "stream": "yes"}, "stream",
                 "'stream' must be a boolean, not a string", id="stream-string"),
    pytest.param("chat", {"model": MODEL, "messages": MESSAGES, "user": 5}, "user",
                 "'user' must be a string, not a number", id="user-number"),
    pytest.param("chat", {"model": MODEL, "messages": MESSAGES, "stream_options": []},
                 "stream_options", "must be a object, not an array", id="stream-options-array"),
    pytest.param("chat", {"model": MODEL, "messages": MESSAGES, "max_tokens": "10"},
                 "max_tokens", 'whole number of at least 1, got "10"', id="max-tokens-string"),
    pytest.param("chat", {"model": MODEL, "messages": MESSAGES, "max_tokens": 0},
                 "max_tokens", "got 0", id="max-tokens-zero"),
    pytest.param("chat", {"model": MODEL, "messages": MESSAGES, "max_tokens": True},
                 "max_tokens", "got true", id="max-tokens-bool"),
    pytest.param("chat", {"model": MODEL, "messages": MESSAGES, "max_tokens": 1.5},
                 "max_tokens", "got 1.5", id="max-tokens-fraction"),
    pytest.param("completions", {"model": MODEL, "prompt": "hi", "n": -1}, "n", "got -1",
                 id="n-negative"),
    pytest.param("completions", {"model": MODEL, "prompt": "hi", "n": 129}, "n",
                 "at most 128 choices", id="n-past-openais-ceiling"),
    pytest.param("chat", {"model": MODEL, "messages": MESSAGES, "max_tokens": 10**6},
                 "max_tokens", f"'max_tokens' is 1000000, more than this model's context of "
                 f"{CONTEXT} tokens", id="max-tokens-beyond-context"),
    pytest.param("chat", {"model": MODEL, "messages": MESSAGES,
                          "max_completion_tokens": CONTEXT + 1}, "max_completion_tokens",
                 f"is {CONTEXT + 1}, more than", id="max-completion-tokens-beyond-context"),
    pytest.param("completions", {"model": MODEL, "prompt": "hi", "max_tokens": 10**18},
                 "max_tokens", "more than this model's context", id="completion-max-tokens"),
])
def test_bad_bodies_are_400s_naming_the_field_and_never_forwarded(
    gateway: Gateway, validate_openai: Callable[[str, Any], None],
    path: str, body: bytes | dict[str, Any], param: str | None, match: str,
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = gateway.post("/v1/chat/completions" if path == "chat" else "/v1/completions", raw)
    assert_openai_error(r, 400, validate_openai, param, match)
    assert len(r.json()["error"]["message"]) < 400  # a message, not the body echoed
    assert gateway.forwarded() == []
    ok = gateway.post("/v1/chat/completions", json.dumps(
        {"model": MODEL, "messages": MESSAGES, "max_tokens": CONTEXT}).encode())
    assert ok.status_code == 200, ok.text  # the limit is the context, not less


def test_bad_bodies_on_admin_routes_are_openai_4xx(
    gateway: Gateway, validate_openai: Callable[[str, Any], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"/admin/traffic/{MODEL}"
    with caplog.at_level(logging.ERROR):
        for body, match in ((b'{"weights": ' + nested(5000).encode() + b"}", NESTED_TOO_DEEPLY),
                            (nested(5000).encode(), NESTED_TOO_DEEPLY),
                            (b"{not json", "JSON decode error"),
                            (b"[1]", "Input should be a valid dictionary"),
                            (b'{"weights": {"production": "all"}}', "weights.production")):
            r = gateway.http.put(gateway.srv.url + url, content=body,
                                 headers={"content-type": "application/json", **ADMIN})
            assert r.status_code == 400, (body[:40], r.text)
            validate_openai("ErrorResponse", r.json())
            assert match in r.json()["error"]["message"]
    assert [r.getMessage() for r in caplog.records] == []


def _raw_request(url: str, head: str, parts: Iterator[bytes]) -> tuple[bytes, int]:
    """Send ``head`` and then ``parts`` until the server answers; (the answer, body bytes
    sent before it came). A server that reads the whole body first answers after all."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head.encode())
        sent = 0
        s.setblocking(False)
        for part in parts:
            view = memoryview(part)
            while view:
                readable, writable, _ = select.select([s], [s], [], 30)
                if readable:
                    return _read_answer(s), sent
                if writable:
                    try:
                        n = s.send(view)
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        continue
                    sent += n
                    view = view[n:]
        return _read_answer(s), sent


def _read_answer(s: socket.socket) -> bytes:
    s.setblocking(True)
    data = b""
    deadline = time.monotonic() + 30
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        if time.monotonic() > deadline:
            break
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


THIRTY_MB = 30 * 1024 * 1024


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b" " * size


@pytest.mark.parametrize("path", [
    pytest.param("/v1/chat/completions", id="chat"),
    pytest.param("/v1/completions", id="completions"),
    pytest.param(f"/admin/traffic/{MODEL}", id="admin"),
])
def test_a_30mb_body_is_refused_with_413_before_it_is_read(gateway: Gateway, path: str) -> None:
    method = "PUT" if path.startswith("/admin") else "POST"
    host = gateway.srv.url.removeprefix("http://")
    common = (f"{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
              f"authorization: Bearer {TOKEN}\r\n")
    # Declared: answered before a byte of the body is sent.
    answer, sent = _raw_request(gateway.srv.url, common + f"content-length: {THIRTY_MB}\r\n\r\n",
                                _chunks(THIRTY_MB))
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    err = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert err["code"] == "request_too_large" and f"at most {LIMIT} bytes" in err["message"]
    assert f"is {THIRTY_MB} bytes" in err["message"]
    assert sent < THIRTY_MB // 4  # the rest was never waited for
    # Chunked (no length): reading stops at the limit.
    chunked = (b"%x\r\n%s\r\n" % (len(c), c) for c in _chunks(THIRTY_MB))
    answer, sent = _raw_request(gateway.srv.url, common + "transfer-encoding: chunked\r\n\r\n",
                                chunked)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert "is larger than that" in json.loads(answer.partition(b"\r\n\r\n")[2])["error"][
        "message"]
    assert sent < THIRTY_MB // 4
    assert gateway.forwarded() == []
    text = gateway.http.get(gateway.srv.url + "/metrics").text
    if not path.startswith("/admin"):
        assert 'reg_gateway_rejected_requests_total{code="413",reason="too_large"} 2.0' in text


def test_a_body_at_the_limit_is_served(gateway: Gateway) -> None:
    body = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
    padded = body[:-1] + b", \"x\": \"" + b"a" * (LIMIT - len(body) - 9) + b"\"}"
    assert len(padded) == LIMIT
    assert gateway.post("/v1/chat/completions", padded).status_code == 200
    assert gateway.post("/v1/chat/completions", padded + b" ").status_code == 413
    assert len(gateway.forwarded()) == 1


def test_the_openapi_document_bounds_max_tokens_by_the_served_context(gateway: Gateway) -> None:
    """A client generated from /openapi.json (schemathesis, SDKs) learns the bound the
    gateway enforces; the one just past it is refused naming the field."""
    spec = gateway.http.get(gateway.srv.url + "/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/completions"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["properties"]["max_tokens"]["maximum"] == CONTEXT
    r = gateway.post("/v1/completions", json.dumps(
        {"model": MODEL, "prompt": "hi", "max_tokens": CONTEXT + 1}).encode())
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    gateway.srv.gateway.state.engines = {}
    spec = gateway.http.get(gateway.srv.url + "/openapi.json").json()
    props = spec["paths"]["/v1/completions"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]
    assert "maximum" not in props["max_tokens"]  # no engine yet: no bound to state


def test_a_whole_number_written_as_a_float_is_a_count(gateway: Gateway) -> None:
    # JSON Schema (and vLLM's pydantic models) count 8.0 as the integer 8; 8.5 stays a 400.
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 8.0}
    assert gateway.post("/v1/chat/completions", json.dumps(body).encode()).status_code == 200
    [sent] = gateway.forwarded()
    assert json.loads(sent.body)["max_tokens"] == 8 and b"8.0" not in sent.body
    body["max_tokens"] = float(CONTEXT + 1)
    r = gateway.post("/v1/chat/completions", json.dumps(body).encode())
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_a_null_n_is_the_default_one_choice(gateway: Gateway) -> None:
    # OpenAI's schema makes n nullable; schemathesis found null answered with a 500.
    body = {"model": MODEL, "prompt": "hi", "n": None}
    r = gateway.post("/v1/completions", json.dumps(body).encode())
    assert r.status_code == 200, r.text
    assert len(gateway.forwarded()) == 1
