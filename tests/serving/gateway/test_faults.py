"""The gateway's hot path against a scripted upstream: failover before the first byte,
errors after it, keep-alive reuse, client disconnects. Fast (no vLLM); the real-engine
behaviour is in test_live.py.

The upstream is a real HTTP server on loopback (tests/support/fault_server.py) that
answers like vLLM does for the adapter named in the request, or fails on purpose.
The supervisor is built but does not run (``manage_engines=False``): the tests set the
engine's state themselves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from registry.deployments import Deployment
from registry.traffic import TrafficPolicy
from serving.engines.process import EngineState
from serving.engines.state import EngineStatus
from tests.support.fault_server import FaultServer, Request, chat_body, chunked, sse_events
from tests.support.gateway import Server, serve_in_thread
from tests.support.sources import InMemorySource

MODEL = "bot"
ENGINE = "/base"
WORDS = {1: "alpha", 2: "bravo"}


# How the upstream fails for an adapter: None answers normally.
Faults = dict[str, str]


def upstream_handler(faults: Faults) -> Callable[[Request], list[bytes] | str]:
    def handle(req: Request) -> list[bytes] | str:
        body = json.loads(req.body)
        adapter = body["model"]
        version = int(adapter.rsplit("@v", 1)[1])
        word = WORDS[version]
        fault = faults.get(adapter)
        if body.get("stream"):
            events = sse_events(adapter, [word, " one", " two"])
            writes = chunked(events)
            if fault == "die_before_first_byte":
                return [writes[0], b"<close>"]
            if fault == "die_after_first_event":
                return [writes[0], writes[1], b"<close>"]
            if fault == "slow":
                return [writes[0], writes[1]] + [b"<pause>"] * 40 + writes[2:]
            return writes
        payload = chat_body(adapter, f"{word} one two")
        head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(payload)).encode() + b"\r\n\r\n")
        if fault == "die_mid_body":
            return [head, payload[:20], b"<close>"]
        if fault == "http_500":
            err = b'{"error": {"message": "boom", "type": "InternalError", "code": 500}}'
            return [b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json"
                    b"\r\ncontent-length: " + str(len(err)).encode() + b"\r\n\r\n" + err]
        return [head + payload]

    return handle


@dataclass
class Stack:
    srv: Server
    upstream: FaultServer
    faults: Faults

    @property
    def url(self) -> str:
        return self.srv.url

    def set_engine(self, state: EngineState, reason: str = "") -> None:
        self.srv.gateway.state.engines = {
            ENGINE: EngineStatus(key=ENGINE, url=self.upstream.url, state=state, reason=reason)}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    from serving.config import ServeConfig
    from serving.gateway.app import create_app
    from serving.gateway.routing import build_catalogue

    deps = [Deployment(MODEL, 1, ("production",), "d1", ENGINE, 8),
            Deployment(MODEL, 2, ("canary",), "d2", ENGINE, 8)]
    # All unpinned traffic goes to the canary, so its failures fail over to production.
    policies = {MODEL: TrafficPolicy(MODEL, {"production": 0, "canary": 100})}
    faults: Faults = {}
    upstream = FaultServer(upstream_handler(faults))
    cfg = ServeConfig(admin_token="t", max_concurrency=8)
    app = create_app(InMemorySource(deps, policies), cfg, manage_engines=False)
    srv = serve_in_thread(app)
    gw = srv.gateway
    gw.state.catalogue = build_catalogue(deps, policies, marker=1)
    gw.state.loaded_once = True
    st = Stack(srv, upstream, faults)
    st.set_engine(EngineState.ready)
    try:
        yield st
    finally:
        srv.stop()
        upstream.stop()


@pytest.fixture
def faults(stack: Stack) -> Iterator[Faults]:
    stack.faults.clear()
    stack.set_engine(EngineState.ready)
    yield stack.faults
    stack.faults.clear()


_HTTP = httpx.Client(timeout=10)  # one client: building one costs ~50 ms (its SSL context)


def chat(url: str, model: str = MODEL, **kw: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **kw}
    return _HTTP.post(url + "/v1/chat/completions", json=body)


def metric(url: str, name: str, **labels: str) -> float:
    text = _HTTP.get(url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_answers_validate_through_the_openai_client(
    stack: Stack, faults: Faults, validate_openai: Callable[[str, Any], None],
) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-reg-version"] == "v2"
    assert raw.headers["x-reg-stage"] == "canary"
    body = json.loads(raw.content)
    validate_openai("CreateChatCompletionResponse", body)
    assert body["model"] == MODEL
    assert raw.parse().choices[0].message.content == "bravo one two"

    chunks = list(client.chat.completions.create(
        model=f"{MODEL}@v1", messages=[{"role": "user", "content": "hi"}], stream=True))
    for c in chunks:
        validate_openai("CreateChatCompletionStreamResponse", c.model_dump(exclude_unset=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "alpha one two"
    assert all(c.model == f"{MODEL}@v1" for c in chunks)
    assert all(c.usage is None for c in chunks), "usage was not asked for: its chunk is dropped"


def test_keep_alive_upstream_connections_are_reused(stack: Stack, faults: Faults) -> None:
    before = stack.upstream.connections
    for _ in range(20):
        assert chat(stack.url).status_code == 200
    assert stack.upstream.connections - before <= 1


def test_dies_mid_body_before_any_byte_to_the_client_fails_over(
    stack: Stack, faults: Faults,
) -> None:
    faults[f"{MODEL}@v2"] = "die_mid_body"
    before = metric(stack.url, "reg_gateway_failovers_total", from_version="v2")
    r = chat(stack.url)
    assert r.status_code == 200, r.text
    assert r.headers["x-reg-version"] == "v1"
    assert r.headers["x-reg-stage"] == "production"
    assert r.headers["x-reg-failover"] == "engine_down"  # what a lost connection is called
    assert r.json()["choices"][0]["message"]["content"] == "alpha one two"
    assert metric(stack.url, "reg_gateway_failovers_total", from_version="v2") == before + 1


def test_stream_dies_before_its_first_byte_fails_over(stack: Stack, faults: Faults) -> None:
    faults[f"{MODEL}@v2"] = "die_before_first_byte"
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        assert resp.headers["x-reg-version"] == "v1"
        assert resp.headers["x-reg-failover"]
        chunks = list(resp.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "alpha one two")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_stream_dies_after_its_first_byte_ends_with_an_error_event(
    stack: Stack, faults: Faults,
) -> None:
    faults[f"{MODEL}@v1"] = "die_after_first_event"
    before = metric(stack.url, "reg_gateway_requests_total", version="v1", code="502")
    with httpx.stream("POST", stack.url + "/v1/chat/completions", timeout=10, json={
        "model": f"{MODEL}@v1", "stream": True,
        "messages": [{"role": "user", "content": "hi"}]},
    ) as r:
        assert r.status_code == 200
        events = [e for e in r.read().split(b"\n\n") if e]
    assert json.loads(events[0].removeprefix(b"data: "))["choices"][0]["delta"] == {
        "content": "alpha"}
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "engine_error"
    assert b"[DONE]" not in events[-1]
    assert metric(stack.url, "reg_gateway_requests_total", version="v1", code="502") == (
        before + 1)

    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError, match="the engine dropped the stream"):
        list(client.chat.completions.create(
            model=f"{MODEL}@v1", messages=[{"role": "user", "content": "hi"}], stream=True))


def test_upstream_5xx_fails_over_and_pinned_5xx_is_a_502(stack: Stack, faults: Faults) -> None:
    faults[f"{MODEL}@v2"] = "http_500"
    r = chat(stack.url)
    assert (r.status_code, r.headers["x-reg-version"], r.headers["x-reg-failover"]) == (
        200, "v1", "http_500")
    r = chat(stack.url, model=f"{MODEL}:canary")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "engine_error"
    assert "boom" in r.json()["error"]["message"]


def test_engine_down_is_a_503_with_the_reason_at_once(stack: Stack, faults: Faults) -> None:
    stack.set_engine(EngineState.down, "it exited with code -9; restarting in 1 s")
    t0 = time.monotonic()
    r = chat(stack.url)
    assert time.monotonic() - t0 < 5.0  # answered, not held until an upstream timeout
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert "exited with code -9" in r.json()["error"]["message"]


def test_client_gone_mid_stream_settles_the_accounting(stack: Stack, faults: Faults) -> None:
    faults[f"{MODEL}@v1"] = "slow"
    before = metric(stack.url, "reg_gateway_requests_total", version="v1", code="499")
    with httpx.stream("POST", stack.url + "/v1/chat/completions", timeout=10, json={
        "model": f"{MODEL}@v1", "stream": True,
        "messages": [{"role": "user", "content": "hi"}]},
    ) as r:
        first = next(r.iter_bytes())
        assert b"alpha" in first
    # The client is gone after its first event: the gateway stops the upstream stream.
    deadline = time.monotonic() + 5
    while stack.srv.gateway.state.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stack.srv.gateway.state.in_flight == 0
    assert metric(stack.url, "reg_gateway_requests_total", version="v1", code="499") == (
        before + 1)
    assert metric(stack.url, "reg_gateway_in_flight_requests", version="v1") == 0


def test_concurrency_bound_answers_429_not_a_queue(stack: Stack, faults: Faults) -> None:
    import concurrent.futures

    faults[f"{MODEL}@v1"] = "slow"  # each stream takes ~2 s
    limit = stack.srv.gateway.config.max_concurrency

    def stream_status() -> int:
        with httpx.stream("POST", stack.url + "/v1/chat/completions", timeout=20, json={
            "model": f"{MODEL}@v1", "stream": True,
            "messages": [{"role": "user", "content": "hi"}]},
        ) as r:
            r.read()
            return r.status_code

    with concurrent.futures.ThreadPoolExecutor(limit + 4) as ex:
        codes = list(ex.map(lambda _: stream_status(), range(limit + 4)))
    assert codes.count(200) >= limit - 1
    assert codes.count(429) >= 1
    assert set(codes) <= {200, 429}
