"""serving.engines.load: an engine's load read from its /metrics.

Pages written by prometheus-client's own encoder with vLLM's metric names and label
names (as in the installed vllm's ``v1/metrics/loggers.py``); test_load_live.py scrapes
the session's real vLLM engine while requests run on it.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from serving.engines.load import LORA_INFO, RUNNING, WAITING, EngineLoad, parse_load


def vllm_page(*, waiting: dict[str, float], running: dict[str, float],
              lora: list[tuple[str, str, float]]) -> str:
    reg = CollectorRegistry()
    w = Gauge(WAITING, "waiting", ["engine", "model_name"], registry=reg)
    r = Gauge(RUNNING, "running", ["engine", "model_name"], registry=reg)
    for engine, v in waiting.items():
        w.labels(engine, "base").set(v)
    for engine, v in running.items():
        r.labels(engine, "base").set(v)
    if lora:
        info = Gauge(LORA_INFO, "lora", ["max_lora", "waiting_lora_adapters",
                                         "running_lora_adapters"], registry=reg)
        for waiting_names, running_names, stamp in lora:
            info.labels("4", waiting_names, running_names).set(stamp)
    return generate_latest(reg).decode()


def test_parse_sums_engines_and_takes_the_newest_lora_sample() -> None:
    page = vllm_page(waiting={"0": 2, "1": 1}, running={"0": 5, "1": 3},
                     lora=[("", "bot@v1", 1000.0), ("bot@v2", "bot@v1,bot@v3", 1002.5),
                           ("bot@v9", "", 1001.0)])
    load = parse_load(page, at=7.0)
    assert load == EngineLoad(waiting=3, running=8, running_adapters=frozenset({"bot@v1",
                              "bot@v3"}), waiting_adapters=frozenset({"bot@v2"}),
                              max_lora=4, at=7.0)
    assert load.active_adapters == {"bot@v1", "bot@v2", "bot@v3"}


def test_parse_without_lora_metrics() -> None:
    load = parse_load(vllm_page(waiting={"0": 0}, running={"0": 1}, lora=[]), at=1.0)
    assert (load.waiting, load.running, load.active_adapters, load.max_lora) == (
        0, 1, frozenset(), None)


def test_parse_refuses_what_is_not_prometheus_text() -> None:
    with pytest.raises(ValueError):
        parse_load("<html>not metrics</html>\n", at=0.0)


@pytest.mark.parametrize(("age", "stale"), [
    pytest.param(1.99, False, id="fresh"), pytest.param(2.0, False, id="at-limit"),
    pytest.param(2.01, True, id="stale")])
def test_staleness(age: float, stale: bool) -> None:
    assert EngineLoad(at=10.0).stale(10.0 + age, 2.0) is stale
    assert EngineLoad().stale(0.0, 2.0), "never scraped is stale"
