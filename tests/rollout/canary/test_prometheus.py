"""rollout.canary.prometheus against a real Prometheus scraping the gateway's real metrics.

Requests are settled by the gateway's own accounting (``RequestAccount``), which feeds
both sources: the ``reg_gateway_routed_*`` series, served over HTTP and scraped every
second by Prometheus, and a ``RequestLog``. Each test then reads one window from both
and compares. A window's edges are taken in quiet moments, after Prometheus scraped
everything before them (``settle``), which is what makes exact counts comparable.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from recipes.core.errors import RegError
from rollout.canary.analysis import Histogram, Samples, Side
from rollout.canary.prometheus import PrometheusSource, expression, increases, quote, side
from rollout.canary.records import RequestLog
from rollout.canary.series import ANALYSIS_BUCKETS
from serving.gateway.accounting import RequestAccount
from serving.gateway.metrics import Metrics
from serving.gateway.routing import Target
from tests.support.histograms import assert_same_observations
from tests.support.services import prometheus_query, running_prometheus, wait_scraped


class MetricsServer:
    """The gateway's Metrics served at /metrics over real HTTP, swappable (a restart)."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.failing = False  # answer 500: the scrape fails
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics" or served.failing:
                    self.send_error(404 if self.path != "/metrics" else 500)
                    return
                body = served.metrics.render()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class World:
    served: MetricsServer
    prometheus: str
    source: PrometheusSource
    log: RequestLog

    def settle(self) -> datetime:
        """A window edge: now, once Prometheus has scraped everything finished before."""
        wait_scraped(self.prometheus, time.time())
        return datetime.now(UTC)

    def request(self, model: str, version: int, *, latency_s: float, code: int = 200,
                failover_to: int | None = None, ttft_s: float | None = None) -> None:
        """One routed request, settled by the gateway's accounting as the hot path does."""
        stream = ttft_s is not None
        t0 = time.perf_counter() - latency_s
        account = RequestAccount(self.served.metrics, self.log, target(model, version), t0,
                                 stream=stream)
        if failover_to is not None:
            account.switch(target(model, failover_to), "http_500")
        if ttft_s is not None:
            account.ttft = ttft_s
        account.finish(code)


def target(model: str, version: int) -> Target:
    stage = "production" if version == 1 else "canary"
    return Target(model, version, stage, f"{model}@v{version}", "/base")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    served = MetricsServer()
    try:
        for url in running_prometheus(tmp_path_factory.mktemp("prom"), [served.target]):
            with httpx.Client(timeout=10) as client:
                yield World(served, url, PrometheusSource(url, client), RequestLog())
    finally:
        served.stop()


def latencies(side: Side) -> tuple[float, ...]:
    assert isinstance(side.latency, Samples)
    return side.latency.values


def test_a_window_counts_what_the_gateways_records_count(world: World) -> None:
    m = "bot-agree"
    since = world.settle()
    for i in range(40):
        world.request(m, 1, latency_s=0.02 + 0.001 * i)
    for i in range(30):
        world.request(m, 2, latency_s=0.03 + 0.002 * i, ttft_s=0.01 + 0.001 * i)
    for _ in range(4):
        world.request(m, 2, latency_s=0.5, failover_to=1)  # v2's failure, though v1 answered
    for code in (500, 502, 503):
        world.request(m, 2, latency_s=0.2, code=code)
    world.request(m, 1, latency_s=0.05, code=503)
    world.request(m, 2, latency_s=0.04, code=400)  # the client's error: ok for the version
    world.request(m, 2, latency_s=1.5, code=499)  # the client went away: ok, its time kept
    until = world.settle()

    prom = world.source.window(m, 2, 1, since, until)
    log = world.log.window(m, 2, 1, since, until)
    assert (prom.canary.requests, prom.canary.errors) == (log.canary.requests,
                                                          log.canary.errors) == (39, 7)
    assert (prom.baseline.requests, prom.baseline.errors) == (log.baseline.requests,
                                                              log.baseline.errors) == (41, 1)
    assert prom.seconds == pytest.approx(log.seconds)
    assert_same_observations(prom.canary.latency, Samples(latencies(log.canary)))
    assert_same_observations(prom.baseline.latency, Samples(latencies(log.baseline)))
    assert isinstance(log.canary.ttft, Samples) and log.canary.ttft.count == 30
    assert_same_observations(prom.canary.ttft, log.canary.ttft)
    assert prom.baseline.ttft.count == 0  # no streams on v1


def test_only_the_window_counts_and_the_baseline_may_start_earlier(world: World) -> None:
    m = "bot-window"
    early = world.settle()
    for _ in range(10):
        world.request(m, 1, latency_s=0.02)
        world.request(m, 2, latency_s=0.02, code=500)
    since = world.settle()
    for _ in range(5):
        world.request(m, 1, latency_s=0.02)
        world.request(m, 2, latency_s=0.02)
    until = world.settle()

    w = world.source.window(m, 2, 1, since, until)
    assert (w.canary.requests, w.canary.errors, w.baseline.requests) == (5, 0, 5)
    # At 100% the controller reads the baseline over the whole rollout.
    w = world.source.window(m, 2, 1, since, until, baseline_since=early)
    log = world.log.window(m, 2, 1, since, until, baseline_since=early)
    assert (w.canary.requests, w.canary.errors, w.baseline.requests) == (5, 0, 15)
    assert (log.canary.requests, log.canary.errors, log.baseline.requests) == (5, 0, 15)


def test_a_gateway_restart_inside_the_window_loses_no_later_request(world: World) -> None:
    m = "bot-restart"
    for _ in range(20):
        world.request(m, 2, latency_s=0.02)
    since = world.settle()
    for _ in range(3):
        world.request(m, 2, latency_s=0.02)
    world.settle()
    world.served.metrics = Metrics()  # a restarted gateway: every counter from zero
    for _ in range(4):
        world.request(m, 2, latency_s=0.02, code=500)
    until = world.settle()
    w = world.source.window(m, 2, 1, since, until)
    # After a reset only the restarted process's counts are known: the 3 before are lost,
    # as with PromQL's increase(); the 4 after count whole, not 4 - 23.
    assert (w.canary.requests, w.canary.errors) == (4, 4)


def value(world: World, expr: str) -> float:
    """The one target's value of ``expr`` now."""
    [row] = prometheus_query(world.prometheus, expr)
    return float(row["value"][1])


def test_a_failed_scrape_just_before_the_end_hides_no_series(world: World) -> None:
    m = "bot-stale"
    since = world.settle()
    for _ in range(6):
        world.request(m, 2, latency_s=0.02)
    world.settle()
    world.served.failing = True  # Prometheus marks every series stale at this scrape
    try:
        t = time.time()
        deadline = time.monotonic() + 30
        while not (value(world, "up") == 0 and value(world, "timestamp(up)") >= t):
            assert time.monotonic() < deadline, "no scrape failed"
            time.sleep(0.2)
        until = datetime.now(UTC)
        plain = f'reg_gateway_routed_requests_total{{model="{m}"}}'
        assert prometheus_query(world.prometheus, plain) == []  # stale: a selector sees none
        w = world.source.window(m, 2, 1, since, until)
    finally:
        world.served.failing = False
    assert (w.canary.requests, w.canary.latency.count) == (6, 6)


def test_a_version_with_no_traffic_is_an_empty_side(world: World) -> None:
    m = "bot-idle"
    since = world.settle()
    world.request(m, 1, latency_s=0.02)
    until = world.settle()
    w = world.source.window(m, 9, 1, since, until)
    assert (w.canary.requests, w.canary.errors, w.canary.latency.count) == (0, 0, 0)
    assert w.baseline.requests == 1


def test_label_values_are_quoted_so_prometheus_accepts_any_model_name(world: World) -> None:
    odd = 'bot"\\weird'
    assert quote(odd) == '"bot\\"\\\\weird"'
    assert world.source.query(expression(odd, (1, 2)), datetime.now(UTC)) == []


def test_prometheus_errors_name_the_url_and_the_query(world: World) -> None:
    now = datetime.now(UTC)
    with pytest.raises(RegError, match=r"refused the query sum\( \(HTTP 400, bad_data\)"):
        world.source.query("sum(", now)
    with httpx.Client(timeout=2) as client:
        nothing = PrometheusSource("http://127.0.0.1:9", client)
        with pytest.raises(RegError, match=r"cannot query Prometheus at http://127.0.0.1:9"):
            nothing.window("bot", 2, 1, now, now)
        # Something that is not Prometheus (the gateway's metrics server itself).
        wrong = PrometheusSource(f"http://{world.served.target}", client)
        with pytest.raises(RegError, match=r"answered HTTP 501 without a JSON body"):
            wrong.query("up", now)
    with pytest.raises(RegError, match=r"with a 'scalar' result, not an instant vector"):
        world.source.query("1", now)


def test_increases_count_born_series_whole_and_resets_from_zero() -> None:
    a, b, c = ({"__name__": "x", "k": k} for k in "abc")
    out = increases([(a, 10.0), (b, 3.0), (c, 7.0)], [(a, 4.0), (b, 5.0)])
    assert out == [(a, 6.0), (b, 3.0), (c, 7.0)]


def test_a_side_sums_outcomes_and_buckets_over_gateways() -> None:
    def row(tag: str, **labels: str) -> dict[str, str]:
        return {"reg_series": tag, "version": "v2", **labels}

    counter, bucket = "requests", "latency"
    s = side([
        (row(counter, outcome="ok", instance="a"), 5.0),
        (row(counter, outcome="ok", instance="b"), 3.0),
        (row(counter, outcome="error", instance="a"), 1.0),
        (row(counter, outcome="failover", instance="b"), 2.0),
        (row(bucket, le="0.1", instance="a"), 4.0), (row(bucket, le="+Inf", instance="a"), 5.0),
        (row(bucket, le="0.1", instance="b"), 1.0), (row(bucket, le="+Inf", instance="b"), 3.0),
    ])
    assert (s.requests, s.errors) == (11, 3)
    assert isinstance(s.latency, Histogram)
    assert s.latency.bounds == (0.1, math.inf) and s.latency.cumulative == (5.0, 8.0)
    assert s.ttft.count == 0


def test_the_buckets_are_fine_enough_for_p95_ratios() -> None:
    steps = [b / a for a, b in itertools.pairwise(ANALYSIS_BUCKETS)]
    assert ANALYSIS_BUCKETS[0] == 0.005 and ANALYSIS_BUCKETS[-1] == 60.0
    assert max(steps) < 1.15  # a 1.25 latency ratio spans at least one whole bucket
