"""The gateway over several replicas of one base model's engine: the version by the policy,
then the replica by the picker; a replica that fails before any byte is left for the next,
then for production; per-replica series on /metrics.

The replicas are scripted HTTP servers on loopback (tests/support/fault_server.py), so a
failure is injected on demand; the live two-engine test is tests/serving/test_replicas_live.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from registry.deployments import Deployment
from registry.traffic import TrafficPolicy
from serving.config import ServeConfig
from serving.engines.load import EngineLoad
from serving.engines.process import EngineState
from serving.engines.replicas import replica_key, replica_specs
from serving.engines.state import Deployed, EngineStatus
from serving.gateway.state import StatePublisher
from tests.support.fault_server import FaultServer, Request, chat_body, response
from tests.support.gateway import Server, serve_in_thread
from tests.support.sources import InMemorySource

MODEL = "support-bot"
BASE = "/base"
V1, V2 = f"{MODEL}@v1", f"{MODEL}@v2"


@dataclass
class Replicas:
    srv: Server
    engines: list[FaultServer]
    publisher: StatePublisher
    http: httpx.Client
    failing: set[int] = field(default_factory=set)
    # What each scripted engine holds: others are answered 404, as vLLM does.
    holds: dict[int, frozenset[str]] = field(default_factory=dict)

    def publish(self, *adapters: frozenset[str], down: frozenset[int] = frozenset()) -> None:
        self.holds = dict(enumerate(adapters))
        self.publisher.engines({
            replica_key(BASE, i): EngineStatus(
                key=replica_key(BASE, i), base=BASE, replica=i, url=e.url, name="tiny",
                state=EngineState.down if i in down else EngineState.ready,
                adapters=adapters[i], max_loras=2)
            for i, e in enumerate(self.engines)})

    def chat(self, user: str, model: str = MODEL) -> httpx.Response:
        return self.http.post(self.srv.url + "/v1/chat/completions", json={
            "model": model, "user": user, "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
def replicas() -> Iterator[Callable[[int], Replicas]]:
    made: list[Replicas] = []

    def make(n: int) -> Replicas:
        from serving.gateway.app import create_app

        deps = [Deployment(MODEL, 1, ("production",), "d1", BASE, 512),
                Deployment(MODEL, 2, ("canary",), "d2", BASE, 512)]
        policies: dict[str, TrafficPolicy | None] = {
            MODEL: TrafficPolicy(MODEL, {"production": 0, "canary": 100})}
        stack: Replicas

        def handler(i: int) -> Callable[[Request], list[bytes]]:
            def answer(req: Request) -> list[bytes]:
                model = json.loads(req.body)["model"]
                if i in stack.failing:
                    return [response(b'{"error": "down"}', status="503 Service Unavailable")]
                if model not in stack.holds.get(i, ()):
                    return [response(b'{"error": "no such model"}', status="404 Not Found")]
                return [response(chat_body(model, f"replica {i}"))]
            return answer

        engines = [FaultServer(handler(i)) for i in range(n)]
        srv = serve_in_thread(create_app(InMemorySource(deps, policies), ServeConfig(),
                                         manage_engines=False))
        publisher = StatePublisher(srv.gateway.state, srv.gateway.metrics)
        publisher.deployed(Deployed(deps, policies, {MODEL: (1, 2)}, marker=1))
        stack = Replicas(srv, engines, publisher, httpx.Client(timeout=30))
        made.append(stack)
        return stack

    yield make
    for s in made:
        s.http.close()
        s.srv.stop()
        for e in s.engines:
            e.stop()


def answered_by(r: httpx.Response) -> int:
    assert r.status_code == 200, r.text
    content: str = r.json()["choices"][0]["message"]["content"]
    return int(content.removeprefix("replica "))


def test_an_adapters_requests_go_only_to_the_replicas_holding_it(
        replicas: Callable[[int], Replicas]) -> None:
    s = replicas(3)
    s.publish(frozenset({V1}), frozenset({V1, V2}), frozenset({V1, V2}))
    seen = {answered_by(s.chat(f"u{i}")) for i in range(12)}
    assert seen <= {1, 2} and seen, seen
    assert s.engines[0].requests == [], "replica 0 lacks v2: never tried for it"
    # Pinned to v1, which all three hold: the least loaded by the scrape goes first.
    now = time.monotonic()
    s.srv.gateway.state.loads = {replica_key(BASE, i): EngineLoad(running=r, at=now + 60)
                                 for i, r in enumerate((5.0, 3.0, 0.0))}
    assert {answered_by(s.chat(f"u{i}", V1)) for i in range(4)} == {2}


def test_a_failing_replica_moves_the_request_to_the_next_then_to_production(
        replicas: Callable[[int], Replicas]) -> None:
    s = replicas(2)
    s.publish(frozenset({V1, V2}), frozenset({V1, V2}))
    s.failing.add(0)
    for i in range(4):
        r = s.chat(f"u{i}")
        assert answered_by(r) == 1
        assert r.headers["x-reg-version"] == "v2" and "x-reg-failover" not in r.headers
    s.failing.add(1)
    r = s.chat("u0")
    assert r.status_code == 503  # production's replicas fail too: nothing left
    s.failing.discard(1)
    # Only replica 1 holds v1 now: v2 fails on both, production answers from replica 1.
    s.publish(frozenset({V2}), frozenset({V1, V2}))
    s.failing.add(1)
    s.failing.discard(0)
    r = s.chat("u0")
    assert (r.headers["x-reg-version"], answered_by(r)) == ("v2", 0)
    # The one ready replica lacks v2 (a free slot: tried, 404): production answers there.
    s.failing.clear()
    s.publish(frozenset({V2}), frozenset({V1}), down=frozenset({0}))
    r = s.chat("u0")
    assert (r.headers["x-reg-version"], r.headers["x-reg-failover"]) == ("v1", "http_404")
    assert answered_by(r) == 1
    text = s.http.get(s.srv.url + "/metrics").text
    assert 'reg_engine_replica_failovers_total{engine="tiny",reason="engine_down"} 6.0' in text
    assert 'reg_engine_requests_total{engine="tiny#1"} 5.0' in text, text


def test_no_ready_replica_is_a_503_naming_the_engine(
        replicas: Callable[[int], Replicas]) -> None:
    s = replicas(2)
    s.publish(frozenset({V1, V2}), frozenset({V1, V2}), down=frozenset({0, 1}))
    r = s.chat("u0", V1)
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
    assert all(e.requests == [] for e in s.engines)


def test_per_replica_load_gauges_follow_the_scrape(replicas: Callable[[int], Replicas]
                                                   ) -> None:
    s = replicas(2)
    s.publish(frozenset({V1}), frozenset({V2}))
    s.srv.gateway.state.loads = {BASE: EngineLoad(waiting=2, running=7, at=time.monotonic())}
    s.publisher.loads_scraped()
    text = s.http.get(s.srv.url + "/metrics").text
    assert 'reg_engine_requests_waiting{engine="tiny"} 2.0' in text
    assert 'reg_engine_requests_running{engine="tiny"} 7.0' in text
    assert 'reg_engine_in_flight_requests{engine="tiny"} 0.0' in text
    assert 'engine="tiny#1"' not in text.split("reg_engine_requests_waiting", 1)[1].split(
        "# HELP", 1)[0], "a replica never scraped exports no load"


@pytest.mark.parametrize(("env", "expected"), [
    pytest.param({"REG_EXTERNAL_ENGINES": "/m=http://a:1"}, {"/m": ("http://a:1",)},
                 id="one-per-base-as-before"),
    pytest.param({"REG_EXTERNAL_ENGINES": "/m=http://a:1/, /m=http://b:2,/n=http://c:3"},
                 {"/m": ("http://a:1", "http://b:2"), "/n": ("http://c:3",)},
                 id="a-base-named-again-is-another-replica"),
])
def test_external_engines_list_replicas_per_base(env: dict[str, str],
                                                 expected: dict[str, tuple[str, ...]]) -> None:
    assert ServeConfig.from_env(env).external_engines == expected


def test_replicas_setting_is_checked() -> None:
    from serving.config import ConfigError
    assert ServeConfig.from_env({"REG_REPLICAS": "3"}).replicas == 3
    with pytest.raises(ConfigError, match="REG_REPLICAS=0: must be at least 1"):
        ServeConfig.from_env({"REG_REPLICAS": "0"})


def test_replica_specs_local_and_external() -> None:
    from serving.engines.process import EngineSpec
    spec = EngineSpec("/m", "m", 4, 8, 512)
    other = EngineSpec("/n", "n", 4, 8, 512)
    got = replica_specs({"/m": spec, "/n": other}, 2, {"/n": ("http://x:1", "http://y:2",
                                                             "http://z:3")})
    assert got == {"/m": ("/m", spec, None), "/m#1": ("/m", spec, None),
                   "/n": ("/n", other, "http://x:1"), "/n#1": ("/n", other, "http://y:2"),
                   "/n#2": ("/n", other, "http://z:3")}


def test_only_bases_with_several_ready_replicas_are_scraped(
        replicas: Callable[[int], Replicas]) -> None:
    s = replicas(2)
    s.publish(frozenset({V1}), frozenset({V1}))
    state = s.srv.gateway.state
    assert set(state.scraped_replicas()) == {BASE, replica_key(BASE, 1)}
    s.publish(frozenset({V1}), frozenset({V1}), down=frozenset({1}))
    assert set(state.scraped_replicas()) == {BASE}
    s.publisher.engines({BASE: EngineStatus(key=BASE, url=s.engines[0].url, name="tiny",
                                            state=EngineState.ready)})
    assert state.scraped_replicas() == {}, "one replica: nothing to choose, no scrape"


def test_ready_while_each_base_has_a_ready_replica(replicas: Callable[[int], Replicas]
                                                   ) -> None:
    s = replicas(2)
    s.publish(frozenset({V1}), frozenset({V1}), down=frozenset({1}))
    r = s.http.get(s.srv.url + "/ready")
    assert r.status_code == 200, r.text
    assert r.json()["engines"][replica_key(BASE, 1)]["state"] == "down"
    s.publish(frozenset({V1}), frozenset({V1}), down=frozenset({0, 1}))
    assert s.http.get(s.srv.url + "/ready").status_code == 503
