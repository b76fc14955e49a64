"""Every query of the shipped Grafana dashboard, run against a real Prometheus that scrapes
the session's real gateway (tests/serving/conftest.py: the gateway, its supervisor, the
canary controller it hosts and ONE vLLM engine).

The state each panel shows is made for real first: chats through the official openai
client (several users at once, some streamed), a request for a model that does not
exist (refused before routing), a rollout of v2 started through the registry and moved
by the hosted controller until its analysis is stored, and a training run recorded as the
reconciler records one. Then, for every panel target of deploy/grafana/reg-dashboard.json
(template variables substituted as Grafana would), the PromQL must parse and return
data; the model variable's query must list the model. The test leaves the stack as it
found it (v1 in production, v2 in canary, 80/20, no rollout active).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from deploy.grafana import dashboard
from recipes.schema import RolloutSpec
from registry.api import Registry
from rollout.canary.controller import RolloutCommands
from rollout.canary.decide import Command
from tests.support.gateway import Server
from tests.support.live_stack import MODEL, set_baseline
from tests.support.services import prometheus_query, running_prometheus, wait_scraped
from tests.support.traffic import PROMPT, Traffic

pytestmark = pytest.mark.slow

# What Grafana puts in place of its variables here: one model, a rate window several
# scrapes wide (Prometheus scrapes every second in these tests), and the time range.
VARIABLES = {"$model": MODEL, "$__rate_interval": "30s", "$__range": "10m"}


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a template variable is left in {expr}"
    return expr


@pytest.fixture(scope="module")
def prometheus(stack: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_prometheus(tmp_path_factory.mktemp("prometheus"),
                                  [stack.url.removeprefix("http://")])


def synced(stack: Server, registry: Registry, timeout_s: float = 10.0) -> None:
    """Until the gateway's routing follows the registry's latest change."""
    want = registry.change_marker()
    deadline = time.monotonic() + timeout_s
    while stack.gateway.state.catalogue.marker < want:
        assert time.monotonic() < deadline, "the gateway did not catch up"
        time.sleep(0.02)


def reset(stack: Server, registry: Registry) -> None:
    if registry.list_rollouts(MODEL, active=True):
        RolloutCommands(registry).command(MODEL, Command.abort, actor="tester",
                                          reason="test reset")
    registry.promote(MODEL, 1, "production", reason="test reset")
    registry.set_traffic(MODEL, {"production": 100}, None, reason="test reset")
    synced(stack, registry)


@pytest.fixture
def clean(stack: Server, registry: Registry) -> Iterator[None]:
    reset(stack, registry)
    yield
    reset(stack, registry)
    set_baseline(registry)
    synced(stack, registry)


def real_requests(url: str) -> None:
    """A streamed chat and a request for a model that does not exist, through openai."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
    try:
        chunks = list(client.chat.completions.create(
            model=MODEL, messages=PROMPT, user="dashboard-stream", max_tokens=4,
            temperature=0, stream=True))
        assert chunks and chunks[0].model
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=PROMPT,
                                           max_tokens=2)
    finally:
        client.close()


def wait_for_analysis(registry: Registry, rid: int, timeout_s: float = 180.0) -> None:
    """Until the hosted controller stored an analysis with a measured error rate."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = registry.get_rollout(rid)
        values = {a["name"]: a.get("value") for a in row.analysis}
        if row.phase in ("progressing", "awaiting_approval") and values.get(
                "error_rate") is not None:
            return
        assert row.active, f"the rollout ended ({row.phase}): {row.reason}"
        assert time.monotonic() < deadline, (
            f"no analysis yet: {row.phase}, step {row.step}, {row.analysis}; {row.reason}")
        time.sleep(0.2)


def empty_targets(prom: str, targets: list[tuple[str, str]]) -> list[str]:
    """The targets whose query returns nothing now (a query Prometheus refuses raises)."""
    return [f"{title}: {expr}" for title, expr in targets
            if not prometheus_query(prom, substitute(expr))]


def test_every_dashboard_query_parses_and_returns_data(
    stack: Server, registry: Registry, prometheus: str, clean: None
) -> None:
    data: dict[str, Any] = json.loads(dashboard.OUT.read_text())
    targets = dashboard.targets(data)
    assert len(targets) >= 25
    run = registry.create_run(MODEL, "sha256:dashboard-live", workdir="",
                              creator="reconciler")  # as a reconcile pass records one
    # Steps 50 then 100 with approval: after the first step the rollout waits for a
    # person, still analysing; it never reaches production in this test.
    spec = RolloutSpec.model_validate({"steps": [{"weight": 50}, {"weight": 100}],
                                       "interval": "10m", "min_requests": 5,
                                       "approval": True})
    rid = RolloutCommands(registry).start(MODEL, 2, spec, actor="tester").id
    try:
        with Traffic(stack.url, MODEL, users=4):
            real_requests(stack.url)
            wait_for_analysis(registry, rid)
            # The gateway reads the registry every few seconds; Prometheus scrapes every
            # second: wait until a scrape holds what was stored before now.
            stored = time.time()
            deadline = time.monotonic() + 60
            while (stack.gateway.metrics.registry.get_sample_value(
                    "reg_operator_refresh_timestamp_seconds") or 0) < stored:
                assert time.monotonic() < deadline, "the operator metrics were not refreshed"
                time.sleep(0.2)
            wait_scraped(prometheus, time.time())
            empty = empty_targets(prometheus, targets)
            # A rate window fills over a few scrapes: look again before failing.
            deadline = time.monotonic() + 45
            while empty and time.monotonic() < deadline:
                time.sleep(1)
                empty = empty_targets(prometheus, targets)
        assert empty == [], "panel queries that return no data:\n" + "\n".join(empty)
        # The model variable (Grafana's label_values(metric, label)) lists the model.
        body = httpx.get(prometheus + "/api/v1/label/model/values", timeout=10,
                         params={"match[]": "reg_traffic_weight_ratio"}).json()
        assert MODEL in body["data"]
        # The values shown are the registry's: the rollout's phase and analysis.
        phase = prometheus_query(prometheus, substitute(
            'max by (version, phase) (reg_rollout_phase{model=~"$model"}) == 1'))
        assert [(r["metric"]["version"], r["metric"]["phase"]) for r in phase] in (
            [("v2", "progressing")], [("v2", "awaiting_approval")])
        weight = prometheus_query(prometheus, substitute(
            'max(reg_rollout_canary_weight_ratio{model=~"$model", version="v2"})'))
        assert float(weight[0]["value"][1]) == 0.5
        runs = prometheus_query(prometheus, substitute(
            'max(reg_training_runs{model=~"$model", status="training"})'))
        assert float(runs[0]["value"][1]) >= 1
    finally:
        registry.update_run(run.id, status="cancelled", actor="tester")
