"""A deployed version that cannot be served (degraded): its weighted traffic fails over to
production, a pin on it gets a 503 naming the reason, /ready stays up, the gauge reads 0.

The gateway runs for real over a scripted upstream (tests/support/fault_server.py); the
supervisor's reports are made through the gateway's own StatePublisher, as the supervisor
makes them. A real corrupt artifact under a real engine is in test_degraded_live.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from registry.deployments import Deployment
from registry.traffic import TrafficPolicy
from serving.config import ServeConfig
from serving.engines.process import EngineState
from serving.engines.state import Deployed, EngineStatus
from serving.gateway.state import StatePublisher
from tests.support.fault_server import FaultServer, Request, chat_body, response
from tests.support.gateway import Server, serve_in_thread
from tests.support.sources import InMemorySource

MODEL = "support-bot"
ENGINE = "/base"
WHY = "fetch failed: ArtifactCorrupt: stored blob hashes to sha256 0123456789ab..."


def upstream(req: Request) -> list[bytes]:
    return [response(chat_body(json.loads(req.body)["model"]))]


@dataclass
class Stack:
    srv: Server
    engine: FaultServer
    publisher: StatePublisher
    http: httpx.Client

    def chat(self, model: str = MODEL) -> httpx.Response:
        return self.http.post(self.srv.url + "/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": "hi"}]})

    def metrics(self) -> str:
        return self.http.get(self.srv.url + "/metrics").text


@pytest.fixture
def stack() -> Iterator[Stack]:
    """support-bot v1 in production, v2 in canary with all unpinned traffic."""
    from serving.gateway.app import create_app

    deps = [Deployment(MODEL, 1, ("production",), "d1", ENGINE, 512),
            Deployment(MODEL, 2, ("canary",), "d2", ENGINE, 512)]
    policies: dict[str, TrafficPolicy | None] = {
        MODEL: TrafficPolicy(MODEL, {"production": 0, "canary": 100})}
    engine = FaultServer(upstream)
    srv = serve_in_thread(create_app(InMemorySource(deps, policies), ServeConfig(),
                                     manage_engines=False))
    publisher = StatePublisher(srv.gateway.state, srv.gateway.metrics)
    publisher.deployed(Deployed(deps, policies, {MODEL: (1, 2)}, marker=1))
    publisher.engines({ENGINE: EngineStatus(key=ENGINE, url=engine.url,
                                            state=EngineState.ready, name="tiny")})
    http = httpx.Client(timeout=30)
    try:
        yield Stack(srv, engine, publisher, http)
    finally:
        http.close()
        srv.stop()
        engine.stop()


def test_a_degraded_canary_fails_over_and_a_pin_on_it_is_a_503_with_the_reason(
    stack: Stack,
) -> None:
    assert stack.chat().headers["x-reg-version"] == "v2"
    stack.publisher.degraded({(MODEL, 2): WHY})

    r = stack.chat()
    assert r.status_code == 200, r.text
    assert (r.headers["x-reg-version"], r.headers["x-reg-failover"]) == ("v1", "degraded")
    client = openai.OpenAI(base_url=stack.srv.url + "/v1", api_key="x", max_retries=0)
    for pin in (f"{MODEL}@v2", f"{MODEL}:canary"):
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(model=pin,
                                           messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 503
        err = e.value.response.json()["error"]
        assert err["code"] == "version_degraded"
        assert err["message"].startswith(f"{MODEL}@v2 is deployed but cannot be served: {WHY}")
        assert e.value.response.headers["retry-after"] == "1"
    assert [json.loads(q.body)["model"] for q in stack.engine.requests] == [
        f"{MODEL}@v2", f"{MODEL}@v1"]  # nothing sent to the degraded version since

    ready = stack.http.get(stack.srv.url + "/ready")
    assert ready.status_code == 200, ready.text
    text = stack.metrics()
    assert 'reg_deployment_servable{model="support-bot",stage="canary",version="v2"} 0.0' in text
    assert ('reg_deployment_servable{model="support-bot",stage="production",version="v1"} 1.0'
            in text)
    assert ('reg_gateway_failovers_total{from_version="v2",model="support-bot",'
            'reason="degraded",to_version="v1"} 1.0') in text

    stack.publisher.degraded({})
    assert stack.chat(f"{MODEL}@v2").status_code == 200
    assert ('reg_deployment_servable{model="support-bot",stage="canary",version="v2"} 1.0'
            in stack.metrics())


def test_a_degraded_production_is_a_503_with_the_reason_and_nothing_is_sent(
    stack: Stack,
) -> None:
    stack.publisher.degraded({(MODEL, 1): WHY, (MODEL, 2): WHY})
    r = stack.chat()  # the canary fails, and so does production: no failover left
    assert r.status_code == 503 and r.json()["error"]["code"] == "version_degraded"
    assert WHY in r.json()["error"]["message"]
    assert stack.engine.requests == []
