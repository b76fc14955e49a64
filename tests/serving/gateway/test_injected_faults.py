"""Fault injection for game days: the admin routes, the hot path, the audit log, /metrics.

The gateway runs for real (uvicorn on loopback) over a scripted upstream that answers like
vLLM (tests/support/fault_server.py) and a real SQLite registry that records the events;
the supervisor does not run (the tests set the engine's state). With the real engine the
faults are used in tests/serving/test_rollout_live.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from registry.api import Registry
from registry.deployments import Deployment
from registry.settings import Settings
from registry.traffic import TrafficPolicy
from serving.engines.process import EngineState
from serving.engines.state import EngineStatus
from serving.gateway.faults import Fault, Faults
from tests.support.cli import reg_fails, reg_ok
from tests.support.factories import ArtifactFactory
from tests.support.fault_server import FaultServer, Request, chat_body, response
from tests.support.gateway import Server, serve_in_thread
from tests.support.sources import InMemorySource

MODEL = "support-bot"
ENGINE = "/base"
TOKEN = "admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}


def upstream(req: Request) -> list[bytes]:
    adapter = json.loads(req.body)["model"]
    return [response(chat_body(adapter, f"answer of {adapter}"))]


@dataclass
class Stack:
    srv: Server
    registry: Registry
    settings: Settings
    http: httpx.Client

    def put(self, version: str, **body: Any) -> httpx.Response:
        return self.http.put(f"{self.srv.url}/admin/faults/{MODEL}/{version}", json=body,
                             headers=ADMIN)

    def delete(self, version: str) -> httpx.Response:
        return self.http.delete(f"{self.srv.url}/admin/faults/{MODEL}/{version}",
                                params={"actor": "alice"}, headers=ADMIN)

    def chat(self, model: str = MODEL) -> httpx.Response:
        return self.http.post(self.srv.url + "/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": "hi"}]})

    def metrics(self) -> str:
        return self.http.get(self.srv.url + "/metrics").text


@pytest.fixture
def stack(tmp_path: Path, make_artifact: ArtifactFactory) -> Iterator[Stack]:
    """support-bot v1 (production) and v2 (canary, all unpinned traffic) behind the gateway."""
    from serving.config import ServeConfig
    from serving.gateway.app import create_app
    from serving.gateway.routing import build_catalogue
    from serving.source import RegistrySource

    settings = Settings.for_home(tmp_path / "home")
    reg = Registry(settings)
    for _ in range(2):
        reg.register_artifact(make_artifact(MODEL))
    deps = [Deployment(MODEL, 1, ("production",), "d1", ENGINE, 8),
            Deployment(MODEL, 2, ("canary",), "d2", ENGINE, 8)]
    policies = {MODEL: TrafficPolicy(MODEL, {"production": 0, "canary": 100})}
    engine = FaultServer(upstream)
    app = create_app(InMemorySource(deps, policies), ServeConfig(admin_token=TOKEN),
                     writer=RegistrySource(reg), manage_engines=False)
    srv = serve_in_thread(app)
    srv.gateway.state.catalogue = build_catalogue(deps, policies, marker=1)
    srv.gateway.state.loaded_once = True
    srv.gateway.state.engines = {
        ENGINE: EngineStatus(key=ENGINE, url=engine.url, state=EngineState.ready)}
    http = httpx.Client(timeout=30)
    try:
        yield Stack(srv, reg, settings, http)
    finally:
        http.close()
        srv.stop()
        engine.stop()
        reg.close()


def test_injected_errors_fail_that_versions_requests_until_cleared(stack: Stack) -> None:
    r = stack.put("v2", error_rate=1.0, reason="game day", actor="alice")
    assert r.status_code == 200, r.text
    assert r.json() == {"fault": {"model": MODEL, "version": "v2", "error_rate": 1.0,
                                  "latency_ms": 0}}
    client = openai.OpenAI(base_url=stack.srv.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError, match="Injected fault: 100% errors") as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    # Not failed over: the version's own error, in OpenAI's shape, said to be v2's.
    assert e.value.response.headers["x-reg-version"] == "v2"
    assert e.value.response.json()["error"]["code"] == "injected_fault"
    assert e.value.response.json()["error"]["type"] == "server_error"
    assert "x-reg-failover" not in e.value.response.headers
    pinned = stack.chat(f"{MODEL}@v1")
    assert (pinned.status_code, pinned.headers["x-reg-version"]) == (200, "v1")
    text = stack.metrics()
    assert ('reg_gateway_requests_total{code="500",model="support-bot",stage="canary",'
            'version="v2"} 1.0') in text
    assert 'reg_gateway_injected_error_ratio{model="support-bot",version="v2"} 1.0' in text
    assert stack.http.get(stack.srv.url + "/admin/faults", headers=ADMIN).json() == {
        "faults": [{"model": MODEL, "version": "v2", "error_rate": 1.0, "latency_ms": 0}]}

    assert stack.delete("2").status_code == 200
    assert stack.chat().status_code == 200
    assert "reg_gateway_injected_error_ratio{" not in stack.metrics()
    events = [e for e in stack.registry.events(model=MODEL) if e.kind.startswith("fault.")]
    assert [(e.kind, e.actor, e.version) for e in events] == [
        ("fault.set", "alice", 2), ("fault.cleared", "alice", 2)]
    assert events[0].data["error_rate"] == 1.0 and "game day" in events[0].message


def test_injected_latency_delays_that_versions_requests(stack: Stack) -> None:
    assert stack.put("v2", latency_ms=400).status_code == 200
    t0 = time.perf_counter()
    assert stack.chat().status_code == 200
    slow = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert stack.chat(f"{MODEL}@v1").status_code == 200
    fast = time.perf_counter() - t0
    assert slow >= 0.4 > fast
    assert ('reg_gateway_injected_latency_seconds{model="support-bot",version="v2"} 0.4'
            in stack.metrics())
    events = [e for e in stack.registry.events(model=MODEL) if e.kind == "fault.set"]
    assert events[0].actor == "admin-api" and events[0].data["latency_ms"] == 400


@pytest.mark.parametrize(("version", "body", "status", "message"), [
    pytest.param("v2", {"error_rate": 1.5}, 400, "error_rate: Input should be less than or "
                 "equal to 1", id="rate-above-one"),
    pytest.param("v2", {"error_rate": "0.2"}, 400, "error_rate", id="rate-as-text"),
    pytest.param("v2", {"latency_ms": -1}, 400, "latency_ms", id="negative-latency"),
    pytest.param("v2", {"error_rate": 0.2, "extra": 1}, 400, "extra", id="unknown-field"),
    pytest.param("v2", {}, 400, "Nothing to inject", id="nothing"),
    pytest.param("two", {"error_rate": 0.2}, 400, "'two' is not a version reference",
                 id="bad-version"),
    pytest.param("v9", {"error_rate": 0.2}, 404, r"support-bot has no v9 \(versions: v1",
                 id="unknown-version"),
])
def test_bad_fault_requests_are_refused_in_openais_shape_and_inject_nothing(
    stack: Stack, version: str, body: dict[str, Any], status: int, message: str,
) -> None:
    r = stack.put(version, **body)
    assert r.status_code == status, r.text
    assert re.search(message, r.json()["error"]["message"]), r.json()
    assert stack.srv.gateway.faults.all() == {}
    assert not [e for e in stack.registry.events(model=MODEL) if e.kind.startswith("fault.")]


def test_fault_routes_need_the_admin_token_and_clearing_needs_a_fault(stack: Stack) -> None:
    r = stack.http.put(f"{stack.srv.url}/admin/faults/{MODEL}/v2", json={"error_rate": 0.5})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = stack.delete("v2")
    assert r.status_code == 404
    assert r.json()["error"]["message"].startswith("No fault is injected into support-bot v2")


def test_the_share_failed_follows_the_draw() -> None:
    draws = iter([0.1, 0.3, 0.19, 0.9])
    faults = Faults(CollectorRegistry(), draw=lambda: next(draws))
    fault = Fault(error_rate=0.2)
    assert [faults.fails(fault) for _ in range(4)] == [True, False, True, False]
    assert faults.fails(Fault(latency_s=0.1)) is False  # no draw needed, none taken


def test_reg_fault_sets_lists_and_clears_through_the_running_gateway(stack: Stack) -> None:
    env = {"REG_GATEWAY_URL": stack.srv.url, "REG_ADMIN_TOKEN": TOKEN}
    p = reg_ok(stack.settings, "fault", "support-bot", "v2", "--error-rate", "0.25",
               "--latency-ms", "10", "-r", "game day", **env)
    assert "support-bot v2: injecting 25% errors, +10 ms" in p.stdout
    assert stack.srv.gateway.faults.all() == {(MODEL, 2): Fault(0.25, 0.01)}
    listed = json.loads(reg_ok(stack.settings, "fault", "--json", **env).stdout)
    assert listed == [{"model": MODEL, "version": "v2", "error_rate": 0.25, "latency_ms": 10}]
    reg_ok(stack.settings, "fault", "clear", "v2", **env)
    assert stack.srv.gateway.faults.all() == {}
    assert [(e.kind, e.actor) for e in stack.registry.events(model=MODEL)
            if e.kind.startswith("fault.")] == [("fault.set", "tester"),
                                                 ("fault.cleared", "tester")]
    p = reg_fails(stack.settings, "fault", "v2", "--error-rate", "0.5",
                  **{**env, "REG_ADMIN_TOKEN": "wrong"})
    assert "refused: Admin routes need" in p.stderr and "set REG_ADMIN_TOKEN" in p.stderr
    p = reg_fails(stack.settings, "fault", "v2", "--error-rate", "0.5",
                  **{**env, "REG_GATEWAY_URL": "http://127.0.0.1:9"})
    assert "cannot reach the gateway at http://127.0.0.1:9" in p.stderr
    assert stack.srv.gateway.faults.all() == {}


def test_a_drained_version_gets_no_weighted_traffic_until_a_read_says_it_has_none(
    stack: Stack,
) -> None:
    """A rollback drains the candidate in the gateway before it commits (the controller's
    ``drain`` hook), so no request is routed to it between the verdict and the gateway's
    next registry read."""
    from serving.engines.state import Deployed
    from serving.gateway.metrics import Metrics
    from serving.gateway.state import StatePublisher

    gw = stack.srv.gateway
    gw.state.drain(MODEL, 2)
    r = stack.chat()
    assert (r.status_code, r.headers["x-reg-version"]) == (200, "v1")
    assert "x-reg-failover" not in r.headers
    assert stack.chat(f"{MODEL}@v2").headers["x-reg-version"] == "v2"  # pins still serve
    deps = [Deployment(MODEL, 1, ("production",), "d1", ENGINE, 8),
            Deployment(MODEL, 2, ("canary",), "d2", ENGINE, 8)]
    publisher = StatePublisher(gw.state, Metrics())
    before = TrafficPolicy(MODEL, {"production": 0, "canary": 100})
    publisher.deployed(Deployed(deps, {MODEL: before}, marker=2))  # read before the commit
    assert (MODEL, 2) in gw.state.drained
    after = TrafficPolicy(MODEL, {"production": 100, "canary": 0})
    publisher.deployed(Deployed(deps, {MODEL: after}, marker=3))  # the rollback committed
    assert gw.state.drained == {}
