"""Both metric sources of the canary analysis agree on one rollout's traffic, served by the
real vLLM engine: the gateway's own records (RequestLog) and Prometheus (PromQL over its
HTTP API, scraping the gateway's /metrics every second).

A second gateway app (real, on loopback) sends to the session's ONE engine
(tests/serving/conftest.py ``stack``), which serves support-bot v1 and v2: v1 in
production, v2 in canary, 50/50. Its two versions sit on two engine keys that both
point at that engine, so the candidate's "engine" can be taken down alone (its requests
then fail over to production, the real failover path). The candidate is made bad with
the gateway's fault injection (the admin API `reg fault` uses): errors and latency.
Requests go through the official openai client, streaming and not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from recipes.schema import RolloutSpec
from registry.api import Registry
from registry.deployments import Deployment
from registry.traffic import TrafficPolicy
from rollout.canary.analysis import Side, Verdict, Window, analyze
from rollout.canary.prometheus import PrometheusSource
from serving.engines.process import EngineState
from tests.support.gateway import Server, serve_in_thread
from tests.support.histograms import assert_same_observations
from tests.support.live_stack import ADMIN_TOKEN, MODEL, open_registry, set_baseline
from tests.support.services import running_prometheus, wait_scraped

pytestmark = pytest.mark.slow

PROD_KEY, CANARY_KEY = "/engine-of-v1", "/engine-of-v2"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Where is my order?"}]
SPEC = RolloutSpec.model_validate({"steps": [{"weight": 50}, {"weight": 100}],
                                   "interval": "10s", "min_requests": 20})


@dataclass
class Agreement:
    srv: Server
    prometheus: str
    source: PrometheusSource
    http: httpx.Client

    def settle(self) -> datetime:
        """A window edge: now, once Prometheus has scraped everything finished before."""
        wait_scraped(self.prometheus, time.time())
        return datetime.now(UTC)

    def canary_engine(self, state: EngineState) -> None:
        engines = dict(self.srv.gateway.state.engines)
        engines[CANARY_KEY] = dataclasses.replace(engines[CANARY_KEY], state=state,
                                                  reason="stopped by the test")
        self.srv.gateway.state.engines = engines

    def fault(self, version: int, **body: float) -> None:
        path = f"{self.srv.url}/admin/faults/{MODEL}/v{version}"
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        if body:
            r = self.http.put(path, json={**body, "reason": "sources agree test"},
                              headers=headers)
        else:
            r = self.http.delete(path, headers=headers)
        assert r.status_code == 200, r.text

    def windows(self, since: datetime, until: datetime) -> tuple[Window, Window]:
        return (self.srv.gateway.records.window(MODEL, 2, 1, since, until),
                self.source.window(MODEL, 2, 1, since, until))


@pytest.fixture(scope="module")
def agreement(stack: Server, registry: Registry, reg_home: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agreement]:
    from serving.config import ServeConfig
    from serving.gateway.app import create_app
    from serving.gateway.routing import build_catalogue
    from serving.source import RegistrySource
    from tests.support.sources import InMemorySource

    set_baseline(registry)  # v1 production, v2 canary: the engine serves both adapters
    [engine] = stack.gateway.state.engines.values()
    deadline = time.monotonic() + 60
    while not {f"{MODEL}@v1", f"{MODEL}@v2"} <= set(
            next(iter(stack.gateway.state.engines.values())).adapters):
        assert time.monotonic() < deadline, "the engine does not serve v1 and v2"
        time.sleep(0.2)
    deps = [Deployment(MODEL, 1, ("production",), "d1", PROD_KEY, 8),
            Deployment(MODEL, 2, ("canary",), "d2", CANARY_KEY, 8)]
    policies = {MODEL: TrafficPolicy(MODEL, {"production": 50, "canary": 50})}
    reg = open_registry(reg_home)  # where the admin API records the injected faults
    app = create_app(InMemorySource(deps, policies),
                     ServeConfig(admin_token=ADMIN_TOKEN, max_concurrency=64),
                     writer=RegistrySource(reg), manage_engines=False)
    srv = serve_in_thread(app)
    gw = srv.gateway
    gw.state.catalogue = build_catalogue(deps, policies, marker=1)
    gw.state.loaded_once = True
    # Each key is a base of its own (a replica set of one), as the deployments name it.
    gw.state.engines = {k: dataclasses.replace(engine, key=k, base=k)
                        for k in (PROD_KEY, CANARY_KEY)}
    try:
        target = srv.url.removeprefix("http://")
        for url in running_prometheus(tmp_path_factory.mktemp("prom"), [target]):
            with httpx.Client(timeout=30) as http:
                yield Agreement(srv, url, PrometheusSource(url, http), http)
    finally:
        srv.stop()
        reg.close()


def send(url: str, tag: str, n: int, concurrency: int = 8) -> list[int]:
    """``n`` chat requests, every other one streamed, each from a new user; their statuses."""
    async def run() -> list[int]:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                                    timeout=60)
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> int:
            async with sem:
                try:
                    if i % 2:
                        stream = await client.chat.completions.create(
                            model=MODEL, messages=MESSAGES, user=f"{tag}-{i}", max_tokens=2,
                            temperature=0, stream=True)
                        async for _ in stream:
                            pass
                    else:
                        await client.chat.completions.create(
                            model=MODEL, messages=MESSAGES, user=f"{tag}-{i}", max_tokens=2,
                            temperature=0)
                except openai.APIStatusError as e:
                    return e.status_code
                return 200

        try:
            return list(await asyncio.gather(*(one(i) for i in range(n))))
        finally:
            await client.close()

    return asyncio.run(run())


def assert_same_counts(log: Side, prom: Side) -> None:
    assert (prom.requests, prom.errors) == (log.requests, log.errors)
    assert_same_observations(prom.latency, log.latency)
    assert_same_observations(prom.ttft, log.ttft)


def test_records_and_promql_agree_on_a_bad_candidate(agreement: Agreement) -> None:
    send(agreement.srv.url, "warm", 8)  # the series exist, with counts, before the window
    since = agreement.settle()
    statuses = send(agreement.srv.url, "clean", 40)
    assert set(statuses) == {200}
    # The injected delay must dwarf the engine's own tail, which a loaded machine
    # stretches: a fixed delay under a slow baseline's p95 * max_latency_ratio left the
    # time-to-first-token check "not clear yet" once in CI.
    clean = agreement.srv.gateway.records.window(MODEL, 2, 1, since, datetime.now(UTC))
    tail = max(side.latency.quantile(0.95) for side in (clean.baseline, clean.canary)
               if side.latency.count)
    agreement.fault(2, error_rate=0.25, latency_ms=max(400, round(3000 * tail)))
    try:
        statuses += send(agreement.srv.url, "faulty", 160)
    finally:
        agreement.fault(2)
    agreement.canary_engine(EngineState.starting)
    try:
        statuses += send(agreement.srv.url, "failover", 30)  # v2's fail over to v1
    finally:
        agreement.canary_engine(EngineState.ready)
    until = agreement.settle()

    log, prom = agreement.windows(since, until)
    assert statuses.count(500) > 0
    assert log.canary.errors > statuses.count(500)  # the failovers count against v2 too
    assert log.baseline.errors == 0
    assert_same_counts(log.canary, prom.canary)
    assert_same_counts(log.baseline, prom.baseline)

    by_log = {r.name: r for r in analyze(log, SPEC)}
    by_prom = {r.name: r for r in analyze(prom, SPEC)}
    assert {n: r.verdict for n, r in by_prom.items()} == {n: r.verdict for n, r in by_log.items()}
    assert {n: r.verdict for n, r in by_log.items()} == {
        "error_rate": Verdict.failed, "latency_p95": Verdict.failed, "ttft_p95": Verdict.failed}
    # The error check reads counts only: the same numbers from both sources, exactly.
    e_log, e_prom = by_log["error_rate"], by_prom["error_rate"]
    assert (e_prom.value, e_prom.p_value, e_prom.canary_n) == (
        e_log.value, e_log.p_value, e_log.canary_n)


def test_records_and_promql_count_a_clean_window_alike(agreement: Agreement) -> None:
    since = agreement.settle()
    assert set(send(agreement.srv.url, "good", 60)) == {200}
    until = agreement.settle()
    log, prom = agreement.windows(since, until)
    assert log.canary.requests + log.baseline.requests == 60
    assert log.canary.errors == log.baseline.errors == 0
    assert_same_counts(log.canary, prom.canary)
    assert_same_counts(log.baseline, prom.baseline)
    e_log = next(r for r in analyze(log, SPEC) if r.name == "error_rate")
    e_prom = next(r for r in analyze(prom, SPEC) if r.name == "error_rate")
    assert e_prom == e_log
