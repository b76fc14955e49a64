"""The gateway's measurements for the canary analysis, by the version ROUTING chose: one
RequestRecord per finished routed request and the reg_gateway_routed_* series. Fast (no
vLLM): the upstream is a real HTTP server on loopback that answers like vLLM or fails on
purpose (tests/support/fault_server.py); the real-engine agreement of both sources with
Prometheus is in test_sources_agree.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from registry.deployments import Deployment
from registry.traffic import TrafficPolicy
from rollout.canary.records import RequestRecord
from serving.engines.process import EngineState
from serving.engines.state import EngineStatus
from tests.support.fault_server import FaultServer, Request, chat_body, chunked, sse_events
from tests.support.gateway import Server, serve_in_thread
from tests.support.promtool import assert_promtool_clean
from tests.support.sources import InMemorySource

MODEL = "bot"
ENGINE = "/base"
WORDS = {1: "alpha", 2: "bravo"}
Faults = dict[str, str]  # adapter -> how the upstream fails for it


def upstream(faults: Faults) -> Callable[[Request], list[bytes] | str]:
    def handle(req: Request) -> list[bytes] | str:
        body = json.loads(req.body)
        adapter = body["model"]
        word = WORDS[int(adapter.rsplit("@v", 1)[1])]
        fault = faults.get(adapter)
        if body.get("stream"):
            writes = chunked(sse_events(adapter, [word, " one", " two"]))
            if fault == "die_after_first_event":
                return [writes[0], writes[1], b"<close>"]
            if fault == "slow":
                return [writes[0], writes[1]] + [b"<pause>"] * 40 + writes[2:]
            return writes
        if fault in ("http_500", "http_400"):
            status = "500 Internal Server Error" if fault == "http_500" else "400 Bad Request"
            err = b'{"error": {"message": "boom", "type": "Error", "code": 1}}'
            return [f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(err)}\r\n\r\n".encode() + err]
        payload = chat_body(adapter, f"{word} one two")
        return [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(payload)).encode() + b"\r\n\r\n" + payload]

    return handle


@dataclass
class Stack:
    srv: Server
    upstream: FaultServer
    faults: Faults
    http: httpx.Client

    def chat(self, model: str = MODEL, **kw: object) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **kw}
        return self.http.post(self.srv.url + "/v1/chat/completions", json=body)

    def records(self, since: float) -> list[RequestRecord]:
        """The records finished after ``since``, once no request is in flight."""
        deadline = time.monotonic() + 5
        while self.srv.gateway.state.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        return [r for r in self.srv.gateway.records.records(MODEL) if r.at >= since]

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.http.get(self.srv.url + "/metrics").text.splitlines():
            if line.startswith(name + "{") and all(
                    f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def gateway() -> Iterator[Stack]:
    from serving.config import ServeConfig
    from serving.gateway.app import create_app
    from serving.gateway.routing import build_catalogue

    deps = [Deployment(MODEL, 1, ("production",), "d1", ENGINE, 8),
            Deployment(MODEL, 2, ("canary",), "d2", ENGINE, 8)]
    # Unpinned traffic goes to the canary, so its failures fail over to production.
    policies = {MODEL: TrafficPolicy(MODEL, {"production": 0, "canary": 100})}
    faults: Faults = {}
    server = FaultServer(upstream(faults))
    app = create_app(InMemorySource(deps, policies), ServeConfig(admin_token="t"),
                     manage_engines=False)
    srv = serve_in_thread(app)
    gw = srv.gateway
    gw.state.catalogue = build_catalogue(deps, policies, marker=1)
    gw.state.loaded_once = True
    gw.state.engines = {ENGINE: EngineStatus(key=ENGINE, url=server.url,
                                             state=EngineState.ready)}
    try:
        with httpx.Client(timeout=10) as http:
            yield Stack(srv, server, faults, http)
    finally:
        srv.stop()
        server.stop()


@pytest.fixture
def stack(gateway: Stack) -> Iterator[Stack]:
    gateway.faults.clear()
    yield gateway
    gateway.faults.clear()


def test_an_answered_request_is_ok_for_its_version_with_its_latency(stack: Stack) -> None:
    t0 = time.time()
    r = stack.chat()
    assert r.status_code == 200 and r.headers["x-reg-version"] == "v2"
    [rec] = stack.records(t0)
    assert (rec.model, rec.version, rec.ok, rec.ttft_s) == (MODEL, 2, True, None)
    assert 0 < rec.latency_s < 5 and t0 <= rec.at <= time.time()


def test_a_stream_records_its_time_to_first_token(stack: Stack) -> None:
    t0 = time.time()
    with stack.http.stream("POST", stack.srv.url + "/v1/chat/completions", json={
            "model": f"{MODEL}@v1", "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert b"[DONE]" in r.read()
    [rec] = stack.records(t0)
    assert rec.version == 1 and rec.ok
    assert rec.ttft_s is not None and 0 < rec.ttft_s <= rec.latency_s


def test_a_failover_is_the_routed_versions_failure_not_productions_success(
    stack: Stack,
) -> None:
    stack.faults[f"{MODEL}@v2"] = "http_500"
    v2_failover = stack.metric("reg_gateway_routed_requests_total", version="v2",
                               outcome="failover")
    v1_ok = stack.metric("reg_gateway_routed_requests_total", version="v1", outcome="ok")
    t0 = time.time()
    r = stack.chat()
    assert (r.status_code, r.headers["x-reg-version"]) == (200, "v1")  # the user is served
    [rec] = stack.records(t0)
    assert (rec.version, rec.ok) == (2, False)
    assert stack.metric("reg_gateway_routed_requests_total", version="v2",
                        outcome="failover") == v2_failover + 1
    assert stack.metric("reg_gateway_routed_requests_total", version="v1",
                        outcome="ok") == v1_ok  # production did not get a success for it
    # ... while the served-version metrics still say who answered.
    assert stack.metric("reg_gateway_requests_total", version="v1", code="200") >= 1


@pytest.mark.parametrize(("fault", "model", "code"), [
    pytest.param("http_500", f"{MODEL}:canary", 502, id="engine-5xx-pinned"),
    pytest.param("die_after_first_event", f"{MODEL}@v2", 200, id="stream-broken-mid-way"),
])
def test_a_5xx_is_an_error_and_no_latency_sample(stack: Stack, fault: str, model: str,
                                                 code: int) -> None:
    stack.faults[f"{MODEL}@v2"] = fault
    errors = stack.metric("reg_gateway_routed_requests_total", version="v2", outcome="error")
    samples = stack.metric("reg_gateway_routed_request_duration_seconds_count", version="v2")
    t0 = time.time()
    stream = fault.startswith("die")
    with stack.http.stream("POST", stack.srv.url + "/v1/chat/completions", json={
            "model": model, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}) as r:
        r.read()
        assert r.status_code == code
    [rec] = stack.records(t0)
    assert (rec.version, rec.ok, rec.ttft_s) == (2, False, None)
    assert stack.metric("reg_gateway_routed_requests_total", version="v2",
                        outcome="error") == errors + 1
    assert stack.metric("reg_gateway_routed_request_duration_seconds_count",
                        version="v2") == samples


def test_a_client_error_from_the_engine_is_not_the_versions_error(stack: Stack) -> None:
    stack.faults[f"{MODEL}@v2"] = "http_400"
    t0 = time.time()
    assert stack.chat().status_code == 400
    [rec] = stack.records(t0)
    assert (rec.version, rec.ok) == (2, True)


def test_a_client_gone_mid_stream_is_no_error_and_keeps_its_time(stack: Stack) -> None:
    stack.faults[f"{MODEL}@v1"] = "slow"
    errors = stack.metric("reg_gateway_routed_requests_total", version="v1", outcome="error")
    t0 = time.time()
    with httpx.stream("POST", stack.srv.url + "/v1/chat/completions", timeout=10, json={
            "model": f"{MODEL}@v1", "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert b"alpha" in next(r.iter_bytes())
    [rec] = stack.records(t0)
    assert (rec.version, rec.ok) == (1, True)
    assert rec.ttft_s is not None  # its first token did reach the client
    assert stack.metric("reg_gateway_requests_total", version="v1", code="499") >= 1
    assert stack.metric("reg_gateway_routed_requests_total", version="v1",
                        outcome="error") == errors


def test_requests_refused_before_routing_are_not_recorded(stack: Stack) -> None:
    t0 = time.time()
    assert stack.chat(model="nope").status_code == 404
    assert stack.http.post(stack.srv.url + "/v1/chat/completions",
                           content=b"{").status_code == 400
    assert stack.records(t0) == []


def test_the_log_is_a_metric_source_over_what_the_gateway_served(stack: Stack) -> None:
    since = datetime.now(UTC)
    for _ in range(3):
        assert stack.chat().status_code == 200
        assert stack.chat(f"{MODEL}@v1").status_code == 200
    stack.faults[f"{MODEL}@v2"] = "http_500"
    assert stack.chat().headers["x-reg-failover"] == "http_500"
    stack.records(0)
    w = stack.srv.gateway.records.window(MODEL, 2, 1, since,
                                         datetime.now(UTC) + timedelta(seconds=1))
    assert (w.canary.requests, w.canary.errors, w.canary.latency.count) == (4, 1, 3)
    assert (w.baseline.requests, w.baseline.errors) == (3, 0)


def test_routed_series_by_version_pass_promtool(stack: Stack) -> None:
    stack.chat()
    with stack.http.stream("POST", stack.srv.url + "/v1/chat/completions", json={
            "model": MODEL, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}) as r:
        r.read()
    text = stack.http.get(stack.srv.url + "/metrics").text
    for needle in (
        'reg_gateway_routed_requests_total{model="bot",outcome="ok",version="v2"}',
        'reg_gateway_routed_requests_total{model="bot",outcome="failover",version="v2"}',
        'reg_gateway_routed_request_duration_seconds_bucket{le="0.0112",model="bot",'
        'version="v2"}',
        'reg_gateway_routed_time_to_first_token_seconds_bucket{le="+Inf",model="bot",'
        'version="v2"}',
    ):
        assert needle in text, needle
    assert_promtool_clean(text)
