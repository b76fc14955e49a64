"""Operator metrics read from a real registry (SQLite and PostgreSQL): rollouts moved by the
real canary controller, reconcile events and runs recorded through the facade, and the
gateway app exporting them on /metrics (its lifespan's refresher thread, no engine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from recipes.schema import RolloutSpec
from registry.api import Registry
from registry.settings import Settings
from rollout.canary.controller import CanaryController
from rollout.canary.records import RequestLog, RequestRecord
from serving.config import ServeConfig
from serving.engines.process import EngineState
from serving.engines.state import EngineStatus
from serving.gateway.app import create_app
from serving.gateway.metrics import Metrics
from serving.gateway.operator_metrics import OperatorMetrics, RegistryReader
from serving.gateway.state import GatewayState, StatePublisher
from serving.source import RegistrySource
from tests.support.clock import FakeClock
from tests.support.factories import ArtifactFactory, RegistryFactory
from tests.support.promtool import assert_promtool_clean

MODEL = "support-bot"


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of ``name`` in an exposition, by its labels."""
    return {frozenset(s.labels.items()): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name}


def value(text: str, name: str, **labels: str) -> float:
    found = samples(text, name)
    key = frozenset(labels.items())
    assert key in found, f"{name}{labels} not in {sorted(map(sorted, found))}"
    return found[key]


class Exported:
    """The operator collector on its own registry, read the way Prometheus reads it."""

    def __init__(self, registry: Registry) -> None:
        self.metrics = Metrics()
        self.operator = OperatorMetrics(RegistryReader(registry))
        self.metrics.registry.register(self.operator)

    def scrape(self) -> str:
        assert self.operator.refresh(), self.operator.last_error
        return generate_latest(self.metrics.registry).decode()


def traffic(registry: Registry, log: RequestLog, clock: FakeClock,
            controller: CanaryController, seconds: int, bad: float = 0.0) -> None:
    """200 requests a second split by the stored policy, then a controller pass."""
    rng = np.random.default_rng(7)
    for _ in range(seconds):
        policy = registry.get_traffic(MODEL)
        share = 0 if policy is None else policy.weights.get("canary", 0)
        stages = registry.stage_map(MODEL)
        now = clock.advance(1).timestamp()
        for _ in range(200):
            canary = rng.random() * 100 < share
            version = stages["canary" if canary else "production"].number
            ok = not (canary and rng.random() < bad)
            log.append(RequestRecord(now, MODEL, version, ok, 0.1))
        controller.run_once()


class Probes:
    def verify(self, model: str, version: int) -> tuple[bool, str]:
        return True, "probe answers equal"


@pytest.fixture
def db(make_registry: RegistryFactory) -> Registry:
    """A fresh registry on each database (tests/serving's own ``registry`` is the live
    stack's, shared by the session)."""
    return make_registry()


@pytest.fixture
def world(db: Registry, make_artifact: ArtifactFactory,
          clock: FakeClock) -> tuple[RequestLog, CanaryController]:
    for _ in range(3):
        db.register_artifact(make_artifact(MODEL))
    db.promote(MODEL, 1, "production")
    log = RequestLog()
    return log, CanaryController(db, log, Probes(), clock=clock)


def spec() -> RolloutSpec:
    return RolloutSpec.model_validate({"steps": [{"weight": w} for w in (10, 50, 100)],
                                       "interval": "30s", "min_requests": 20})


def test_a_progressing_rollout_exports_phase_step_weight_and_analysis(
    db: Registry, clock: FakeClock, world: tuple[RequestLog, CanaryController]
) -> None:
    log, controller = world
    controller.start(MODEL, 2, spec())
    traffic(db, log, clock, controller, 4)  # verified, then into the first step
    exported = Exported(db)
    text = exported.scrape()
    assert_promtool_clean(text)
    row = db.list_rollouts(MODEL, limit=1)[0]
    assert row.phase == "progressing" and row.analysis, "the controller stored an analysis"
    labels = {"model": MODEL, "version": "v2"}
    assert value(text, "reg_rollout_phase", **labels, phase="progressing") == 1
    assert sum(samples(text, "reg_rollout_phase").values()) == 1
    assert value(text, "reg_rollout_step", **labels) == row.step + 1
    assert value(text, "reg_rollout_steps", **labels) == 3
    assert value(text, "reg_rollout_canary_weight_ratio", **labels) == row.weight / 100
    assert value(text, "reg_rollout_active", **labels) == 1
    assert value(text, "reg_rollout_info", **labels, rollout=str(row.id), baseline="v1") == 1
    stored = {a["name"]: a for a in row.analysis}
    err = stored["error_rate"]
    check = {**labels, "check": "error_rate"}
    assert value(text, "reg_rollout_analysis_value", **check) == pytest.approx(err["value"])
    assert value(text, "reg_rollout_analysis_limit", **check) == err["limit"]
    assert value(text, "reg_rollout_analysis_p_value", **check) == pytest.approx(err["p_value"])
    assert value(text, "reg_rollout_analysis_samples", **check, side="canary") == err["canary_n"]
    assert value(text, "reg_rollout_analysis_samples", **check,
                 side="baseline") == err["baseline_n"]
    assert value(text, "reg_rollout_analysis_verdict", **check, verdict=err["verdict"]) == 1
    assert value(text, "reg_rollouts_finished_total", model=MODEL, outcome="rolled_back") == 0


def test_a_rolled_back_canary_is_counted_once_and_stays_the_model_s_last_rollout(
    db: Registry, clock: FakeClock, world: tuple[RequestLog, CanaryController]
) -> None:
    log, controller = world
    exported = Exported(db)
    before = exported.scrape()
    # Every outcome is exported at 0 before any rollout, so increase() sees the first one.
    for outcome in ("succeeded", "rolled_back", "aborted"):
        assert value(before, "reg_rollouts_finished_total", model=MODEL, outcome=outcome) == 0
    controller.start(MODEL, 2, spec())
    traffic(db, log, clock, controller, 30, bad=0.3)
    assert db.list_rollouts(MODEL, limit=1)[0].phase == "rolled_back"
    for _ in range(2):  # a second read counts nothing again
        text = exported.scrape()
        assert value(text, "reg_rollouts_finished_total", model=MODEL, outcome="rolled_back") == 1
        assert value(text, "reg_rollouts_finished_total", model=MODEL, outcome="succeeded") == 0
    labels = {"model": MODEL, "version": "v2"}
    assert value(text, "reg_rollout_phase", **labels, phase="rolled_back") == 1
    assert value(text, "reg_rollout_active", **labels) == 0
    assert value(text, "reg_rollout_canary_weight_ratio", **labels) == 0
    assert value(text, "reg_rollout_analysis_verdict", **labels, check="error_rate",
                 verdict="Failed") == 1
    assert_promtool_clean(text)


def test_reconcile_events_and_runs_are_counted_incrementally(db: Registry) -> None:
    exported = Exported(db)
    text = exported.scrape()
    for kind in ("reconcile.failed", "reconcile.pass_failed", "reconcile.registered"):
        assert value(text, "reg_reconcile_events_total", kind=kind) == 0
    db.record_event("reconcile.pass_failed", actor="reconciler", message="boom")
    ok = db.create_run(MODEL, "sha256:1")
    db.update_run(ok.id, status="succeeded")
    bad = db.create_run(MODEL, "sha256:2")
    db.update_run(bad.id, status="failed")
    db.record_event("reconcile.failed", actor="reconciler", model=MODEL, run_id=bad.id)
    db.create_run("other-bot", "sha256:3")
    text = exported.scrape()
    assert value(text, "reg_reconcile_events_total", kind="reconcile.pass_failed") == 1
    assert value(text, "reg_reconcile_events_total", kind="reconcile.failed") == 1
    assert value(text, "reg_reconcile_events_total", kind="reconcile.registered") == 0
    db.record_event("reconcile.failed", actor="reconciler", model=MODEL)
    text = exported.scrape()
    assert value(text, "reg_reconcile_events_total", kind="reconcile.failed") == 2
    assert value(text, "reg_reconcile_events_total", kind="reconcile.pass_failed") == 1
    runs = {dict(k)["model"] + "/" + dict(k)["status"]: v
            for k, v in samples(text, "reg_training_runs").items() if v}
    assert runs == {"support-bot/succeeded": 1, "support-bot/failed": 1,
                    "other-bot/training": 1}
    assert value(text, "reg_training_runs", model="other-bot", status="failed") == 0
    assert_promtool_clean(text)


class Failing:
    """The registry with an injected fault: while ``fail`` is set, every read raises."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        if self.fail:
            raise ConnectionError("database unreachable (injected)")
        return getattr(self.registry, name)


def test_a_failed_read_keeps_the_last_values_and_is_counted(db: Registry) -> None:
    faulty = Failing(db)
    metrics = Metrics()
    operator = OperatorMetrics(RegistryReader(faulty))
    metrics.registry.register(operator)
    db.record_event("reconcile.failed", actor="reconciler")
    assert operator.refresh()
    faulty.fail = True
    db.record_event("reconcile.failed", actor="reconciler")
    assert not operator.refresh()
    assert "database unreachable" in operator.last_error
    text = generate_latest(metrics.registry).decode()
    assert value(text, "reg_reconcile_events_total", kind="reconcile.failed") == 1
    assert value(text, "reg_operator_refresh_errors_total") == 1
    assert value(text, "reg_operator_refresh_timestamp_seconds") > 0
    faulty.fail = False
    assert operator.refresh()  # the failed read counted nothing, so nothing is lost or doubled
    text = generate_latest(metrics.registry).decode()
    assert value(text, "reg_reconcile_events_total", kind="reconcile.failed") == 2


def test_engines_export_their_adapter_slots_beside_the_adapters_loaded() -> None:
    metrics = Metrics()
    StatePublisher(GatewayState(), metrics).engines({"/models/tiny": EngineStatus(
        key="/models/tiny", url="http://127.0.0.1:1", state=EngineState.ready, name="tiny",
        adapters=frozenset({"support-bot@v1", "support-bot@v2"}), max_loras=4)})
    text = metrics.render().decode()
    assert value(text, "reg_engine_adapter_slots", engine="tiny") == 4
    assert value(text, "reg_engine_adapters_loaded", engine="tiny") == 2
    assert_promtool_clean(text)


def wait_for(what: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_gateway_exports_them_from_its_registry_without_a_controller(
    tmp_path: Path, make_artifact: ArtifactFactory
) -> None:
    with Registry(Settings.for_home(tmp_path / "home")) as reg:
        reg.register_artifact(make_artifact(MODEL))
        reg.record_event("reconcile.deploy_failed", actor="reconciler", model=MODEL)
        cfg = ServeConfig(adapter_root=tmp_path / "adapters", log_dir=tmp_path / "logs")
        source = RegistrySource(reg)
        app = create_app(source, cfg, writer=source, manage_engines=False, registry=reg)
        with TestClient(app) as client:
            def exported() -> bool:
                text = client.get("/metrics").text
                found = samples(text, "reg_reconcile_events_total")
                return found.get(frozenset({("kind", "reconcile.deploy_failed")})) == 1
            wait_for(exported)
            text = client.get("/metrics").text
        assert value(text, "reg_rollouts_finished_total", model=MODEL, outcome="aborted") == 0
        assert_promtool_clean(text)
        # Without a registry to read, the gateway exports no operator metrics at all.
        plain = create_app(source, cfg, writer=source, manage_engines=False)
        with TestClient(plain) as client:
            assert "reg_reconcile_events_total" not in client.get("/metrics").text
