"""An adapter re-loaded into a restarted engine is served again only once its identity
probes match (serving.engines.supervisor with serving.engines.identity.probe_adapter).

The engine is external (health-checked and adapter-synced, never started): a real HTTP
server on loopback answering vLLM's admin routes and chat completions with the answer
the test sets (the fault injected: after the restart it answers something else). The
real-vLLM counterpart is tests/reliability/test_engine_faults_live.py.
"""

from __future__ import annotations

import asyncio
import json
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
from tests.support.fault_server import FaultServer, Request, response
from tests.support.sources import InMemorySource

BASE = "/models/tiny"
NAME = "bot@v1"


class ProbedEngine:
    """vLLM's /health, /v1/models, runtime LoRA routes and a chat route answering ``answer``."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self.healthy = True
        self.answer = "alpha: reset"
        self.chats: list[str] = []  # the adapter each chat completion asked for
        self.server = FaultServer(self.handle)

    def handle(self, req: Request) -> list[bytes]:
        if req.path == "/health" and not self.healthy:
            return [response(b"", status="500 Internal Server Error", ctype="text/plain")]
        if req.path == "/v1/models":
            data = [{"id": "tiny", "object": "model"}] + [
                {"id": n, "object": "model", "parent": "tiny"} for n in sorted(self.loaded)]
            return [response(json.dumps({"object": "list", "data": data}).encode())]
        if req.path == "/v1/chat/completions":
            self.chats.append(json.loads(req.body)["model"])
            body = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": self.answer}}]}
            return [response(json.dumps(body).encode())]
        if req.path == "/v1/load_lora_adapter":
            self.loaded.add(json.loads(req.body)["lora_name"])
        elif req.path == "/v1/unload_lora_adapter":
            self.loaded.discard(json.loads(req.body)["lora_name"])
        return [response(b"", ctype="text/plain")]


@pytest.fixture
def engine() -> Iterator[ProbedEngine]:
    e = ProbedEngine()
    try:
        yield e
    finally:
        e.server.stop()


@pytest.mark.parametrize("after_restart", ["alpha: reset", "bravo: wrong weights"],
                         ids=["probes-match", "probes-differ"])
def test_a_restarted_engine_serves_an_adapter_again_only_once_its_probes_match(
    tmp_path: Path, engine: ProbedEngine, after_restart: str,
) -> None:
    root = tmp_path / "adapters"
    (root / NAME).mkdir(parents=True)
    write_probes(root / NAME, ProbeSet(max_tokens=4, probes=[
        Probe(messages=[{"role": "user", "content": "hi"}], answer="alpha: reset")]))
    deps = [Deployment(model="bot", version=1, stages=("production",), digest="d1",
                       base_model_path=BASE, max_model_len=512)]
    cfg = ServeConfig(adapter_root=root, log_dir=tmp_path / "logs", health_interval_s=0.0,
                      restart_backoff_s=(0.0, 0.0), external_engines={BASE: engine.server.url})
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
