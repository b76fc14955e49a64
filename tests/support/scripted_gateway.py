"""A real gateway (uvicorn on loopback) serving support-bot v1 from production over a
scripted upstream (tests.support.fault_server), its routing state set directly: for tests
of what the gateway itself answers, refuses and forwards, without an engine's cost."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from registry.deployments import Deployment
from registry.traffic import TrafficPolicy
from serving.config import ServeConfig
from serving.engines.process import EngineState
from serving.engines.state import EngineStatus
from tests.support.fault_server import FaultServer, Request
from tests.support.gateway import Server, serve_in_thread
from tests.support.sources import InMemorySource

MODEL = "support-bot"
ENGINE = "/base"
CONTEXT = 512  # the scripted engine's --max-model-len


@dataclass
class Gateway:
    srv: Server
    engine: FaultServer
    http: httpx.Client

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None
             ) -> httpx.Response:
        return self.http.post(self.srv.url + path, content=body,
                              headers={"content-type": "application/json", **(headers or {})})

    def forwarded(self) -> list[Request]:
        """What reached the engine (completion requests only)."""
        return [r for r in self.engine.requests if r.path.startswith("/v1/")]


@contextmanager
def scripted_gateway(upstream: Callable[[Request], list[bytes]], **config: Any
                     ) -> Iterator[Gateway]:
    """The gateway with ``ServeConfig(**config)`` over ``upstream``; stopped on exit."""
    from serving.gateway.app import create_app
    from serving.gateway.routing import build_catalogue

    deps = [Deployment(MODEL, 1, ("production",), "d1", ENGINE, CONTEXT)]
    policies = {MODEL: TrafficPolicy(MODEL, {"production": 100})}
    engine = FaultServer(upstream)
    srv = serve_in_thread(create_app(InMemorySource(deps, policies), ServeConfig(**config),
                                     manage_engines=False))
    srv.gateway.state.catalogue = build_catalogue(deps, policies, marker=1)
    srv.gateway.state.loaded_once = True
    srv.gateway.state.engines = {ENGINE: EngineStatus(
        key=ENGINE, url=engine.url, state=EngineState.ready, max_model_len=CONTEXT)}
    gw = Gateway(srv, engine, httpx.Client(timeout=30))
    try:
        yield gw
    finally:
        gw.http.close()
        srv.stop()
        engine.stop()
