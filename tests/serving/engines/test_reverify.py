"""An adapter re-loaded into a restarted engine is served again only once its identity
probes match (serving.engines.supervisor with serving.engines.identity.probe_adapter).

The engine is external (health-checked and adapter-synced, never started): a real HTTP
server on loopback answering vLLM's admin routes and chat completions with the answer
the test sets (the fault injected: after the restart it answers something else). The
real-vLLM counterpart is tests/reliability/test_engine_faults_live.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from recipes.evaluation.probes import Probe, ProbeSet, write_probes
from registry.deployments import Deployment
from serving.config import ServeConfig
from serving.engines.supervisor import Supervisor
from serving.gateway.metrics import Metrics
from serving.gateway.state import GatewayState, StatePublisher
from tests.support.scripted_engine import ScriptedEngine, scripted_engine
from tests.support.sources import InMemorySource

BASE = "/models/tiny"
NAME = "bot@v1"


@pytest.fixture
def engine() -> Iterator[ScriptedEngine]:
    with scripted_engine() as e:
        yield e


@pytest.mark.parametrize("after_restart", ["alpha: reset", "bravo: wrong weights"],
                         ids=["probes-match", "probes-differ"])
def test_a_restarted_engine_serves_an_adapter_again_only_once_its_probes_match(
    tmp_path: Path, engine: ScriptedEngine, after_restart: str,
) -> None:
    root = tmp_path / "adapters"
    (root / NAME).mkdir(parents=True)
    write_probes(root / NAME, ProbeSet(max_tokens=4, probes=[
        Probe(messages=[{"role": "user", "content": "hi"}], answer="alpha: reset")]))
    deps = [Deployment(model="bot", version=1, stages=("production",), digest="d1",
                       base_model_path=BASE, max_model_len=512)]
    cfg = ServeConfig(adapter_root=root, log_dir=tmp_path / "logs", health_interval_s=0.0,
                      restart_backoff_s=(0.0, 0.0), external_engines={BASE: (engine.server.url,)})
    state = GatewayState()

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            sup = Supervisor(InMemorySource(deps, artifacts={NAME: root / NAME}), cfg,
                             StatePublisher(state, Metrics()), session)
            await sup.step()
            # First launch: loaded and served without a probe (a new version's probes are
            # the rollout's identity check).
            assert engine.chats == [] and state.engines[BASE].adapters == {NAME}
            engine.healthy = False
            for _ in range(4):  # health fails 3 times: down, then launched again
                await sup.step()
            assert state.engines[BASE].generation == 2
            engine.loaded.clear()  # the new process has no adapters
            engine.answer = after_restart
            engine.healthy = True
            for _ in range(2):
                await sup.step()

    asyncio.run(run())
    status = state.engines[BASE]
    assert status.ready and status.generation == 2
    assert engine.chats == [NAME]  # one probe, pinned to the adapter
    if after_restart == "alpha: reset":
        assert status.adapters == {NAME} and engine.loaded == {NAME}
        assert state.degraded == {}
    else:
        assert status.adapters == frozenset() and engine.loaded == set()
        reason = state.degraded[("bot", 1)]
        assert reason.startswith("identity probe after the engine restarted: 1/1 probe "
                                 "answers differ"), reason
        assert "'bravo: wrong weights'" in reason
