"""serving.engines.supervisor against a scripted engine: one pass reads the deployments,
sizes the engine for them, syncs its adapters and reports to the gateway's state.

The engine is external (``external_engines``: health-checked and adapter-synced, never
started), a real HTTP server on loopback answering vLLM's admin routes. The real-vLLM
counterpart is in tests/serving/test_live.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from registry.deployments import Deployment
from serving.config import ServeConfig
from serving.engines.process import EngineState
from serving.engines.state import Deployed
from serving.engines.supervisor import Supervisor
from serving.gateway.metrics import Metrics
from serving.gateway.state import GatewayState, StatePublisher
from tests.support.scripted_engine import ScriptedEngine, scripted_engine
from tests.support.sources import InMemorySource

BASE = "/models/tiny"


@pytest.fixture
def engine() -> Iterator[ScriptedEngine]:
    with scripted_engine() as e:
        yield e


def deployment(version: int, stage: str, max_model_len: int) -> Deployment:
    return Deployment(model="bot", version=version, stages=(stage,), digest=f"d{version}",
                      base_model_path=BASE, max_model_len=max_model_len)


def one_pass(tmp_path: Path, engine: ScriptedEngine, deps: list[Deployment]
             ) -> tuple[Supervisor, GatewayState, Metrics]:
    root = tmp_path / "adapters"
    artifacts = {}
    for d in deps:
        (root / d.adapter_name).mkdir(parents=True)
        artifacts[d.adapter_name] = root / d.adapter_name
    cfg = ServeConfig(adapter_root=root, log_dir=tmp_path / "logs",
                      external_engines={BASE: (engine.server.url,)})
    state, metrics = GatewayState(), Metrics()

    async def run() -> Supervisor:
        async with aiohttp.ClientSession() as session:
            sup = Supervisor(InMemorySource(deps, artifacts=artifacts), cfg,
                             StatePublisher(state, metrics), session)
            await sup.step()
            return sup

    return asyncio.run(run()), state, metrics


def test_a_pass_sizes_the_engine_syncs_adapters_and_reports(
    tmp_path: Path, engine: ScriptedEngine, caplog: pytest.LogCaptureFixture,
) -> None:
    deps = [deployment(1, "production", 512), deployment(2, "canary", 1024)]
    with caplog.at_level(logging.WARNING, logger="reg.serving"):
        sup, state, metrics = one_pass(tmp_path, engine, deps)
    assert sup.desired_specs()[BASE].max_model_len == 1024
    assert engine.loaded == {"bot@v1", "bot@v2"}
    status = state.engines[BASE]
    assert (status.state, status.max_model_len, status.adapters) == (
        EngineState.ready, 1024, frozenset({"bot@v1", "bot@v2"}))
    note = ("deployed versions ask for different deploy.max_model_len (bot@v1 512, "
            "bot@v2 1024); the engine runs with the largest, --max-model-len 1024")
    assert len(status.notes) == 1 and status.notes[0].startswith(note)
    assert note in caplog.text
    assert state.loaded_once and set(state.catalogue.models["bot"].versions) == {1, 2}
    text = metrics.render().decode()
    assert 'reg_engine_up{engine="tiny"} 1.0' in text
    assert 'reg_engine_adapters_loaded{engine="tiny"} 2.0' in text
    assert 'reg_traffic_weight_ratio{model="bot",stage="production",version="v1"} 1.0' in text


def test_versions_that_agree_on_a_length_get_no_note(
    tmp_path: Path, engine: ScriptedEngine,
) -> None:
    _, state, _ = one_pass(tmp_path, engine, [deployment(1, "production", 2048)])
    assert (state.engines[BASE].max_model_len, state.engines[BASE].notes) == (2048, ())


def test_an_adapter_that_cannot_be_fetched_is_reported(
    tmp_path: Path, engine: ScriptedEngine,
) -> None:
    deps = [deployment(1, "production", 512)]
    cfg = ServeConfig(adapter_root=tmp_path / "adapters", log_dir=tmp_path / "logs",
                      external_engines={BASE: (engine.server.url,)})
    state = GatewayState()

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            await Supervisor(InMemorySource(deps), cfg, StatePublisher(state, Metrics()),
                             session).step()

    asyncio.run(run())
    assert state.last_error == ("adapter sync: bot@v1: fetch failed: FileNotFoundError: "
                                "no artifact for bot@v1 in this test")
    assert engine.loaded == set()


def test_every_launch_of_an_engine_is_a_new_generation(
    tmp_path: Path, engine: ScriptedEngine,
) -> None:
    """What was checked against an engine (the rollout's identity probes) is checked again
    after a restart: the status says which launch it is."""
    deps = [deployment(1, "production", 512)]
    root = tmp_path / "adapters"
    (root / "bot@v1").mkdir(parents=True)
    cfg = ServeConfig(adapter_root=root, log_dir=tmp_path / "logs", health_interval_s=0.0,
                      restart_backoff_s=(0.0, 0.0), external_engines={BASE: (engine.server.url,)})
    state = GatewayState()
    seen: list[tuple[str, int, int]] = []

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            sup = Supervisor(InMemorySource(deps, artifacts={"bot@v1": root / "bot@v1"}), cfg,
                             StatePublisher(state, Metrics()), session)
            for healthy in (True, False, False, False, False, True):
                engine.healthy = healthy
                await sup.step()
                s = state.engines[BASE]
                seen.append((s.state.value, s.generation, s.restarts))

    asyncio.run(run())
    assert seen == [("ready", 1, 0), ("ready", 1, 0), ("ready", 1, 0), ("down", 1, 0),
                    ("starting", 2, 1), ("ready", 2, 1)]


class Monotonic:
    """The supervisor's clock (seconds), moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_adapter_that_keeps_failing_is_retried_with_backoff_and_degraded(
    tmp_path: Path, engine: ScriptedEngine, caplog: pytest.LogCaptureFixture,
) -> None:
    """A canary whose artifact cannot be fetched: one warning, retries at 1, 2, 4 s (info),
    the version degraded with its reason and its gauge at 0, production untouched; once
    the artifact is there, the next retry loads it and the version is servable again."""
    deps = [deployment(1, "production", 512), deployment(2, "canary", 512)]
    root = tmp_path / "adapters"
    (root / "bot@v1").mkdir(parents=True)
    source = InMemorySource(deps, artifacts={"bot@v1": root / "bot@v1"})
    fetches: list[float] = []
    fetch = source.fetch_artifact
    clock = Monotonic()

    def counted(d: Deployment, dest: Path) -> Path:
        if d.version == 2:
            fetches.append(clock.now - 1000.0)
        return fetch(d, dest)

    source.fetch_artifact = counted  # type: ignore[method-assign,assignment]
    cfg = ServeConfig(adapter_root=root, log_dir=tmp_path / "logs", health_interval_s=0.0,
                      adapter_retry_backoff_s=(1.0, 4.0),
                      external_engines={BASE: (engine.server.url,)})
    state, metrics = GatewayState(), Metrics()
    reason = "fetch failed: FileNotFoundError: no artifact for bot@v2 in this test"

    async def run(until: float) -> Supervisor:
        async with aiohttp.ClientSession() as session:
            sup = Supervisor(source, cfg, StatePublisher(state, metrics), session, clock=clock)
            while clock.now - 1000.0 <= until:
                await sup.step()
                clock.now += 0.25
            return sup

    with caplog.at_level(logging.DEBUG, logger="reg.serving"):
        sup = asyncio.run(run(12.0))
    assert fetches == [0.0, 1.0, 3.0, 7.0, 11.0]  # backoff 1, 2, 4, then capped at 4
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"adapter bot@v2 cannot be synced: {reason}; trying again in 1 s"]
    retries = [r.getMessage() for r in caplog.records if "failed again" in r.getMessage()]
    assert retries[0] == ("adapter bot@v2 failed again (attempt 2, same reason); "
                          "trying again in 2 s")
    assert len(retries) == 4 and all(r.levelno == logging.INFO for r in caplog.records
                                     if "failed again" in r.getMessage())
    assert state.degraded == {("bot", 2): reason}
    assert engine.loaded == {"bot@v1"}
    text = metrics.render().decode()
    assert 'reg_deployment_servable{model="bot",stage="canary",version="v2"} 0.0' in text
    assert 'reg_deployment_servable{model="bot",stage="production",version="v1"} 1.0' in text

    (root / "bot@v2").mkdir()
    source.artifacts = {**source.artifacts, "bot@v2": root / "bot@v2"}
    caplog.clear()

    async def again() -> None:
        async with aiohttp.ClientSession() as session:
            sup.session = session
            for _ in range(20):  # 5 s: past the next retry (at most 4 s away)
                await sup.step()
                clock.now += 0.25

    with caplog.at_level(logging.INFO, logger="reg.serving"):
        asyncio.run(again())
    assert engine.loaded == {"bot@v1", "bot@v2"}
    assert state.degraded == {}
    assert "adapter bot@v2 synced after 5 failed attempts" in caplog.text
    assert ('reg_deployment_servable{model="bot",stage="canary",version="v2"} 1.0'
            in metrics.render().decode())


def test_a_pass_that_keeps_failing_the_same_way_logs_its_traceback_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    class Unreachable(InMemorySource):
        def change_marker(self) -> int:
            raise ConnectionError("the registry database is unreachable")

    cfg = ServeConfig(adapter_root=tmp_path / "adapters", log_dir=tmp_path / "logs",
                      poll_interval_s=0.01)
    state = GatewayState()

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            sup = Supervisor(Unreachable([]), cfg, StatePublisher(state, Metrics()), session)
            sup.start()
            await asyncio.sleep(0.5)
            await sup.stop()

    with caplog.at_level(logging.DEBUG, logger="reg.serving"):
        asyncio.run(run())
    failed = [r for r in caplog.records if r.getMessage() == "supervisor pass failed"]
    again = [r for r in caplog.records if "failed again" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None
    assert len(again) >= 3 and all(r.levelno == logging.DEBUG for r in again)
    assert state.last_error == "ConnectionError: the registry database is unreachable"


class PublishWatch(StatePublisher):
    """Notes which engine requests had been made when routing was published."""

    def __init__(self, engine: ScriptedEngine) -> None:
        super().__init__(GatewayState(), Metrics())
        self.engine = engine
        self.seen_at_publish: list[list[str]] = []

    def deployed(self, read: Deployed) -> None:
        self.seen_at_publish.append(list(self.engine.paths))
        super().deployed(read)


def test_a_stage_move_between_loaded_adapters_publishes_before_asking_the_engine(
    tmp_path: Path, engine: ScriptedEngine
) -> None:
    """Make before break only when something is to be made: a promotion between adapters
    the engine holds is routed at once, a new version is loaded before it is routed."""
    root = tmp_path / "adapters"
    names = ("bot@v1", "bot@v2", "bot@v3")
    for n in names:
        (root / n).mkdir(parents=True)
    source = InMemorySource([deployment(1, "production", 512), deployment(2, "canary", 512)],
                            artifacts={n: root / n for n in names})
    cfg = ServeConfig(adapter_root=root, log_dir=tmp_path / "logs",
                      external_engines={BASE: (engine.server.url,)})
    watch = PublishWatch(engine)

    async def run() -> tuple[int, int]:
        async with aiohttp.ClientSession() as session:
            sup = Supervisor(source, cfg, watch, session)
            await sup.step()  # loads v1 and v2, then publishes
            before_swap = len(engine.paths)
            source.deps = [deployment(2, "production", 512), deployment(1, "canary", 512)]
            source.marker += 1
            await sup.step()
            before_new = len(engine.paths)
            source.deps = [deployment(2, "production", 512), deployment(3, "canary", 512)]
            source.marker += 1
            await sup.step()
            return before_swap, before_new

    before_swap, before_new = asyncio.run(run())
    assert len(watch.seen_at_publish) == 3  # one publication a pass that changed something
    swap, new = watch.seen_at_publish[1][before_swap:], watch.seen_at_publish[2][before_new:]
    assert "/v1/models" not in swap and "/v1/load_lora_adapter" not in swap, swap
    assert "/v1/load_lora_adapter" in new, new  # the new version: loaded, then routed
    assert engine.loaded == {"bot@v2", "bot@v3"}  # and v1 unloaded after


def test_every_external_replica_of_a_base_gets_its_adapters(tmp_path: Path) -> None:
    from serving.engines.replicas import replica_key

    deps = [deployment(1, "production", 512), deployment(2, "canary", 512)]
    root = tmp_path / "adapters"
    artifacts = {}
    for d in deps:
        (root / d.adapter_name).mkdir(parents=True)
        artifacts[d.adapter_name] = root / d.adapter_name
    with scripted_engine() as first, scripted_engine() as second:
        cfg = ServeConfig(adapter_root=root, log_dir=tmp_path / "logs",
                          external_engines={BASE: (first.server.url, second.server.url)})
        state, metrics = GatewayState(), Metrics()

        async def run() -> None:
            async with aiohttp.ClientSession() as session:
                await Supervisor(InMemorySource(deps, artifacts=artifacts), cfg,
                                 StatePublisher(state, metrics), session).step()

        asyncio.run(run())
        assert first.loaded == second.loaded == {"bot@v1", "bot@v2"}
    assert set(state.engines) == {BASE, replica_key(BASE, 1)}
    assert [(s.base, s.replica, s.label, s.adapters) for s in state.engines.values()] == [
        (BASE, 0, "tiny", frozenset({"bot@v1", "bot@v2"})),
        (BASE, 1, "tiny#1", frozenset({"bot@v1", "bot@v2"}))]
    text = metrics.render().decode()
    assert 'reg_engine_up{engine="tiny#1"} 1.0' in text


def test_adapters_are_placed_on_replicas_by_their_traffic(tmp_path: Path) -> None:
    """Four versions over two replicas of two slots: each on one replica while idle; the
    busy one on both once its traffic says so (the copy probed before it is served);
    back to one replica once idle, the other copy unloaded."""
    from serving.engines.replicas import replica_key
    from tests.support.clock import FakeMonotonic

    deps = [deployment(v, "production" if v == 1 else f"s{v}", 512) for v in (1, 2, 3, 4)]
    root = tmp_path / "adapters"
    artifacts = {}
    for d in deps:
        (root / d.adapter_name).mkdir(parents=True)
        artifacts[d.adapter_name] = root / d.adapter_name
    requests: dict[str, int] = {}
    clock = FakeMonotonic()
    with scripted_engine() as first, scripted_engine() as second:
        cfg = ServeConfig(adapter_root=root, log_dir=tmp_path / "logs", max_loras=2,
                          external_engines={BASE: (first.server.url, second.server.url)})
        state = GatewayState()
        seen: list[tuple[frozenset[str], frozenset[str]]] = []

        async def run() -> None:
            async with aiohttp.ClientSession() as session:
                sup = Supervisor(InMemorySource(deps, artifacts=artifacts), cfg,
                                 StatePublisher(state, Metrics()), session, clock=clock,
                                 demand=lambda: (requests, {}))

                async def settle() -> None:  # a move takes two passes: load, then unload
                    for _ in range(3):
                        clock.advance(11)
                        await sup.step()
                    seen.append((frozenset(first.loaded), frozenset(second.loaded)))

                await settle()
                requests["bot@v1"] = 600  # v1 takes the traffic
                await settle()
                for _ in range(7):  # idle for more than the meter's window
                    await settle()

        asyncio.run(run())
    idle, busy, *_, idle_again = seen
    everything = {d.adapter_name for d in deps}
    assert len(idle[0]) == len(idle[1]) == 2 and idle[0] | idle[1] == everything
    assert "bot@v1" in busy[0] and "bot@v1" in busy[1], busy
    assert busy[0] | busy[1] == everything, "the others stay placed"
    assert [("bot@v1" in held) for held in idle_again].count(True) == 1, idle_again
    assert idle_again[0] | idle_again[1] == everything
    assert set(state.engines) == {BASE, replica_key(BASE, 1)}
