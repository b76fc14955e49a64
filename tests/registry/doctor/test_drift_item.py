"""`reg doctor`'s "drift monitored" item: the check's cases (pure), and its facts read from a
real registry (deployed versions with and without a prompt reference) and a real
Prometheus scraping the gateway's real drift gauges."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from recipes.data.drift import build_reference
from registry.doctor.drift import DeployedReference, DriftFacts, gather_drift
from registry.doctor.findings import Status
from registry.doctor.gather import _artifact_json
from registry.doctor.serving_checks import check_drift
from serving.gateway.metrics import Metrics
from tests.support.doctor import monitored, state
from tests.support.factories import ArtifactFactory, RegistryFactory
from tests.support.metrics_server import serving_metrics
from tests.support.services import free_port, running_prometheus

MODEL = "support-bot"
REPORT = {"recipe": MODEL, "prompts": build_reference([[1, 2, 3], [4, 5]], str).to_json()}
OLD_REPORT = {"recipe": MODEL}  # written before references were recorded


@pytest.mark.parametrize(("facts", "status", "words"), [
    pytest.param(None, Status.warn, "no version of bot is deployed", id="not-deployed"),
    pytest.param(DriftFacts(deployed=[DeployedReference(2, ("canary",), False,
                                                        "its data report records no prompt "
                                                        "reference")]),
                 Status.warn, "v2 (canary): its data report records no prompt reference",
                 id="no-reference"),
    pytest.param(monitored(1, prometheus=None), Status.passed,
                 "REG_PROMETHEUS_URL is not set", id="not-checked"),
    pytest.param(DriftFacts(deployed=monitored(1).deployed, prometheus_url="http://p",
                            error="ConnectError: refused"),
                 Status.warn, "cannot ask http://p", id="prometheus-down"),
    pytest.param(DriftFacts(deployed=monitored(1, 2).deployed, prometheus_url="http://p",
                            scraped=frozenset({1})),
                 Status.warn, "holds no reg_drift_reference for v2 (production)",
                 id="not-scraped"),
    pytest.param(monitored(1, 2), Status.passed, "scrapes their reg_drift_* series",
                 id="monitored"),
])
def test_drift_monitored(facts: DriftFacts | None, status: Status, words: str) -> None:
    f = check_drift(state(drift=facts))
    assert f.status is status and words in f.detail, f
    assert (f.fix == "") is (status is Status.passed)


def test_a_model_not_served_has_no_drift_to_monitor() -> None:
    f = check_drift(state({"spec.deploy.target": "none"}, drift=None))
    assert f.status is Status.passed and "not served" in f.detail, f


def _gateway_metrics() -> bytes:
    """A gateway's drift gauges as Metrics renders them: v1 has a reference, v2 none."""
    m = Metrics()
    m.set_drift(MODEL, "v1", True, 120, {"length": 0.01, "tokens": 0.3})
    m.set_drift(MODEL, "v2", False, 0, {})
    return m.render()


@pytest.fixture(scope="module")
def gateway_target() -> Iterator[str]:
    with serving_metrics(_gateway_metrics) as target:
        yield target


@pytest.fixture(scope="module")
def prometheus(gateway_target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_prometheus(tmp_path_factory.mktemp("prom"), [gateway_target])


def test_deployed_references_from_the_registry_and_their_scrape(
        make_registry: RegistryFactory, make_artifact: ArtifactFactory, prometheus: str) -> None:
    reg = make_registry()
    for report in (REPORT, OLD_REPORT, REPORT):
        reg.register(make_artifact(MODEL, extra_files={
            "data_report.json": json.dumps(report).encode()}))
    assert gather_drift(reg, MODEL, _artifact_json, None).deployed == []
    assert gather_drift(reg, "never-registered", _artifact_json, None).deployed == []
    reg.promote(MODEL, 1, "production", reason="test")
    reg.promote(MODEL, 2, "canary", reason="test")
    facts = gather_drift(reg, MODEL, _artifact_json, None)
    assert [(v.number, v.stages, v.reference) for v in facts.deployed] == [
        (1, ("production",), True), (2, ("canary",), False)]
    assert check_drift(state(drift=facts)).status is Status.warn

    dead = f"http://127.0.0.1:{free_port()}"
    down = gather_drift(reg, MODEL, _artifact_json, dead)
    assert down.prometheus_url == dead and "ConnectError" in down.error

    deadline = time.monotonic() + 60
    while not (facts := gather_drift(reg, MODEL, _artifact_json, prometheus)).scraped:
        assert time.monotonic() < deadline, facts  # the first scrape comes a few s in
        time.sleep(0.5)
    assert facts.error == "" and facts.scraped == {1, 2}
    reg.promote(MODEL, 3, "canary", reason="test")  # v3: a reference, never scraped
    facts = gather_drift(reg, MODEL, _artifact_json, prometheus)
    f = check_drift(state(drift=facts))
    assert f.status is Status.warn and "no reg_drift_reference for v3 (canary)" in f.detail
