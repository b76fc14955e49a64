"""``GET /api/status``: the registry overview and the gateway's live state, in one document.

Fast (no vLLM): the upstream is a real HTTP server on loopback that answers like vLLM
(tests/support/fault_server.py), the registry a real SQLite or PostgreSQL one. The live
counters are checked against the gateway's own /metrics; the series and windows, which
need time to pass, against samples built here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from registry.api import Registry
from registry.api.overview import CheckOverview, RolloutOverview
from registry.deployments import Deployment
from registry.traffic import TrafficPolicy
from rollout.canary import series
from serving.config import ServeConfig
from serving.engines.process import EngineState
from serving.engines.state import EngineStatus
from serving.gateway.status import GatewayStatus, StatusHost, step_verdict_of
from serving.gateway.status_series import Cumulative, Sample, series_points, window_of
from tests.support.factories import ArtifactFactory, RegistryFactory
from tests.support.fault_server import FaultServer, Request, chat_body
from tests.support.gateway import Server, serve_in_thread

MODEL = "support-bot"
ENGINE = "/base"
KEY = "sk-status-test-key"
ADMIN = "admin-status-secret"


def answer(req: Request) -> list[bytes] | str:
    adapter = json.loads(req.body)["model"]
    if adapter.endswith("@v2") and b"fail" in req.body:
        err = b'{"error": {"message": "boom", "type": "Error", "code": 1}}'
        return [b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(err)).encode() + b"\r\n\r\n" + err]
    payload = chat_body(adapter, "hello there")
    return [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(payload)).encode() + b"\r\n\r\n" + payload]


DEPLOYMENTS = [Deployment(MODEL, 1, ("production",), "d1", ENGINE, 8),
               Deployment(MODEL, 2, ("canary",), "d2", ENGINE, 8)]
POLICIES = {MODEL: TrafficPolicy(MODEL, {"production": 50, "canary": 50})}


@dataclass
class Gateway:
    srv: Server
    http: httpx.Client

    @property
    def host(self) -> StatusHost:
        host: StatusHost = self.srv.app.state.status
        return host

    def status(self) -> GatewayStatus:
        r = self.http.get(self.srv.url + "/api/status")
        assert r.status_code == 200, r.text
        return GatewayStatus.model_validate(r.json())

    def chat(self, content: str = "hi", *, version: int | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        model = MODEL if version is None else f"{MODEL}@v{version}"
        return self.http.post(self.srv.url + "/v1/chat/completions", headers=headers, json={
            "model": model, "messages": [{"role": "user", "content": content}]})

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.http.get(self.srv.url + "/metrics").text.splitlines():
            if line.startswith(name + "{") and all(
                    f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def make_gateway() -> Iterator[GatewayFactory]:
    """A gateway app served for real over the scripted upstream; engines set by hand."""
    from serving.gateway.app import create_app
    from serving.gateway.routing import build_catalogue
    from tests.support.sources import InMemorySource

    upstream = FaultServer(answer)
    started: list[Server] = []
    clients: list[httpx.Client] = []

    def make(registry: Registry | None = None, **config: Any) -> Gateway:
        cfg = ServeConfig(admin_token=ADMIN, **config)
        app = create_app(InMemorySource(DEPLOYMENTS, POLICIES), cfg, manage_engines=False,
                         registry=registry)
        srv = serve_in_thread(app)
        started.append(srv)
        gw = srv.gateway
        gw.state.catalogue = build_catalogue(DEPLOYMENTS, POLICIES, marker=7)
        gw.state.loaded_once = True
        gw.state.engines = {ENGINE: EngineStatus(
            key=ENGINE, url=upstream.url, state=EngineState.ready, name="base", pid=4242,
            adapters=frozenset({f"{MODEL}@v1", f"{MODEL}@v2"}), max_loras=4,
            max_model_len=512)}
        http = httpx.Client(timeout=10)
        clients.append(http)
        return Gateway(srv, http)

    yield make
    for c in clients:
        c.close()
    for s in started:
        s.stop()
    upstream.stop()


def test_without_a_registry_the_live_part_equals_metrics(make_gateway: GatewayFactory) -> None:
    gw = make_gateway()
    first = gw.status()
    assert first.registry is None
    assert "without a registry" in first.registry_note
    assert first.gateway is not None and first.gateway.versions == []
    for i in range(12):
        assert gw.chat(f"hello {i}", version=1 + i % 2).status_code == 200
    gw.chat("please fail", version=2)
    gw.host.sample()
    doc = gw.status()
    live = doc.gateway
    assert live is not None
    assert (live.ready, live.marker, live.in_flight, live.max_concurrency) == (True, 7, 0, 64)
    assert live.routing[MODEL].weights == {"production": 50, "canary": 50}
    assert live.routing[MODEL].stages == {"production": 1, "canary": 2}
    (engine,) = live.engines
    assert (engine.name, engine.state, engine.ready, engine.adapter_slots, engine.pid) == (
        "base", "ready", True, 4, 4242)
    assert engine.adapters == [f"{MODEL}@v1", f"{MODEL}@v2"]

    by_version = {(v.model, v.version): v for v in live.versions}
    assert set(by_version) == {(MODEL, 1), (MODEL, 2)}
    for (model, version), v in by_version.items():
        labels = {"model": model, "version": f"v{version}"}
        assert v.adapter_name == f"{model}@v{version}"
        for code, n in v.totals.requests.items():
            assert n == gw.metric("reg_gateway_requests_total", code=code, **labels)
        assert v.totals.total == gw.metric("reg_gateway_requests_total", **labels)
        assert v.totals.output_tokens == gw.metric("reg_gateway_output_tokens_total", **labels)
        assert v.totals.prompt_tokens == gw.metric("reg_gateway_prompt_tokens_total", **labels)
        recent = v.recent
        assert recent is not None
        routed = gw.metric(series.REQUESTS + "_total", **labels)
        assert recent.requests == routed
        assert recent.latency_p50_s is not None and recent.latency_p95_s is not None
        assert 0 < recent.latency_p50_s <= recent.latency_p95_s < 10
    v2 = by_version[(MODEL, 2)]
    # Pinned to v2, so its upstream's 500 is answered as a 502 (no failover).
    assert v2.totals.requests == {"200": 6, "502": 1} and v2.totals.errors == 1
    assert list(v2.stages) == ["canary"]
    assert v2.recent is not None and v2.recent.errors == 1
    assert by_version[(MODEL, 1)].totals.output_tokens == 6  # the upstream's usage: 1 each

    line = next(s for s in live.series.versions if s.version == 2)
    assert live.series.interval_s == 5.0 and len(live.series.times) >= 1
    assert len(line.rate) == len(line.error_rate) == len(live.series.times)
    assert sum(r or 0 for r in line.rate) > 0


def test_api_keys_guard_it_and_no_secret_is_shown(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(api_keys=frozenset({KEY}))
    r = gw.http.get(gw.srv.url + "/api/status")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert gw.http.get(gw.srv.url + "/api/status",
                       headers={"authorization": "Bearer wrong"}).status_code == 401
    assert gw.chat(headers={"authorization": f"Bearer {KEY}"}).status_code == 200
    text = gw.http.get(gw.srv.url + "/api/status",
                       headers={"authorization": f"Bearer {KEY}"}).text
    assert KEY not in text and ADMIN not in text
    assert json.loads(text)["gateway"]["versions"]


def test_degraded_deployments_show_the_supervisors_reason(make_gateway: GatewayFactory) -> None:
    gw = make_gateway()
    why = "fetch failed: ArtifactCorrupt: sha256 mismatch"
    gw.srv.gateway.state.degraded = {(MODEL, 2): why}
    gw.srv.gateway.state.last_error = f"adapter sync: {MODEL}@v2: {why}"
    live = gw.status().gateway
    assert live is not None
    assert [(d.model, d.version, d.stages, d.reason) for d in live.degraded] == [
        (MODEL, 2, ["canary"], why)]
    assert live.last_error.endswith(why)


def test_with_a_registry_the_overview_is_read_once_a_second(
        make_gateway: GatewayFactory, make_registry: RegistryFactory,
        make_artifact: ArtifactFactory) -> None:
    reg = make_registry(clock=lambda: datetime.now(UTC))
    reg.register_artifact(make_artifact(MODEL))
    reg.register_artifact(make_artifact(MODEL))
    reg.promote(MODEL, 1, "production")
    reads: list[int] = []
    overview = reg.overview

    def counted() -> Any:
        reads.append(1)
        return overview()

    reg.overview = counted  # type: ignore[method-assign,assignment]
    gw = make_gateway(registry=reg)
    first = gw.status()
    assert first.registry is not None and first.registry_note == ""
    (m,) = first.registry.models
    assert (m.name, m.stages, [v.number for v in m.versions]) == (
        MODEL, {"production": 1}, [2, 1])
    assert first.registry.marker == reg.change_marker()
    for _ in range(5):
        assert gw.status().registry == first.registry
    assert len(reads) == 1
    gw.host._cached = None  # as if a second passed
    reg.promote(MODEL, 2, "staging")
    assert gw.status().registry.models[0].stages == {"production": 1, "staging": 2}  # type: ignore[union-attr]


def test_a_registry_that_cannot_be_read_leaves_the_live_part(
        make_gateway: GatewayFactory, make_registry: RegistryFactory) -> None:
    reg = make_registry()
    gw = make_gateway(registry=reg)
    reg.engine.dispose()

    def broken() -> Any:
        raise RuntimeError("database is down")

    gw.host.overview = broken
    doc = gw.status()
    assert doc.registry is None and doc.gateway is not None
    assert doc.registry_note == "the registry could not be read: RuntimeError: database is down"


def test_openapi_documents_it(make_gateway: GatewayFactory) -> None:
    gw = make_gateway()
    spec = gw.http.get(gw.srv.url + "/openapi.json").json()
    op = spec["paths"]["/api/status"]["get"]
    assert set(op["responses"]) >= {"200", "401"}
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/GatewayStatus"}
    props = spec["components"]["schemas"]["GatewayStatus"]["properties"]
    assert {"registry", "gateway", "verdicts", "registry_note"} <= set(props)


# ---- pure parts ------------------------------------------------------------------------

BUCKETS = len(series.ANALYSIS_BUCKETS) + 1


def cum(requests: int, errors: int, fast: int, slow: int) -> Cumulative:
    """``fast`` answers in the bucket of 0.1 s, ``slow`` in that of 1 s."""
    b = [0] * BUCKETS
    b[series.ANALYSIS_BUCKETS.index(0.1)] += fast
    b[series.ANALYSIS_BUCKETS.index(1.0)] += slow
    return Cumulative(requests, errors, tuple(b))


def test_series_points_are_differences_of_samples() -> None:
    key, new = (MODEL, 1), (MODEL, 2)
    samples = [Sample(100.0, {key: cum(10, 0, 10, 0)}),
               Sample(105.0, {key: cum(60, 5, 55, 0)}),
               Sample(110.0, {key: cum(60, 5, 55, 0), new: cum(10, 0, 0, 10)})]
    s = series_points(samples, 5.0)
    assert s.times == [105.0, 110.0]
    one, two = s.versions
    assert (one.rate, one.error_rate) == ([10.0, 0.0], [0.1, None])
    assert one.latency_p95_s[0] is not None and 0.09 < one.latency_p95_s[0] <= 0.1
    assert one.latency_p95_s[1] is None
    assert (two.version, two.rate, two.error_rate) == (2, [None, 2.0], [None, 0.0])
    assert two.latency_p95_s[1] is not None and 0.9 < two.latency_p95_s[1] <= 1.0


def test_window_of_reads_the_last_seconds() -> None:
    key = (MODEL, 1)
    samples = [Sample(float(t), {key: cum(t, 0, t, 0)}) for t in range(0, 600, 5)]
    now = Sample(600.0, {key: cum(700, 10, 600, 90)})
    w = window_of(samples, now, 300.0)[key]
    assert (w.seconds, w.requests, w.errors) == (300.0, 400, 10)
    assert math.isclose(w.rate, 400 / 300)
    assert w.latency_p95_s is not None and 0.9 < w.latency_p95_s <= 1.0
    assert w.latency_p50_s is not None and w.latency_p50_s <= 0.1
    fresh = window_of([], now, 300.0)[key]  # no sample yet: since the counters began
    assert (fresh.requests, fresh.seconds) == (700, 300.0)


def test_step_verdict_of_a_stored_rollout() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    failed = CheckOverview(name="error_rate", verdict="Failed", value=0.2, limit=0.01,
                           canary_n=50, baseline_n=50, p_value=0.001)
    waiting = CheckOverview(name="error_rate", verdict="Inconclusive", canary_n=3,
                            baseline_n=50, p_value=1.0)
    ro = RolloutOverview(id=1, candidate=2, baseline=1, phase="progressing", active=True,
                         step=0, weight=5, started_at=now, step_started_at=now,
                         updated_at=now, plan={"steps": [{"weight": 5}], "interval": "30s",
                                               "min_requests": 20}, analysis=[failed])
    assert step_verdict_of(ro, now) == "failed"
    ro = ro.model_copy(update={"analysis": [waiting]})
    assert step_verdict_of(ro, now + timedelta(seconds=5)) == "waiting"
    assert step_verdict_of(ro, now + timedelta(seconds=31)) == "inconclusive"
    assert step_verdict_of(ro.model_copy(update={"active": False}), now) is None
