"""The gateway app: its parts wired together, and their lifecycle.

``create_app(source, config)`` builds the app and nothing else (nothing starts at import
or there). Its lifespan:

1. opens the upstream pool (:class:`~serving.upstream.pool.UpstreamPool`, the proxied
   requests) and the supervisor's session (engine admin calls);
2. starts the :class:`~serving.engines.supervisor.Supervisor`, which starts the engines
   and reports to a :class:`~serving.gateway.state.StatePublisher` that keeps the
   routing snapshot current, and the :class:`~serving.engines.load.LoadScraper` that
   reads each ready replica's ``/metrics`` for the replica picker;
3. given a registry to host it over, starts the canary controller beside them
   (:class:`~serving.gateway.rollouts.RolloutHost`, `reg serve`'s default), and given a
   registry to read, the thread that keeps the operator metrics fresh
   (:class:`~serving.gateway.operator_metrics.OperatorMetrics`); the sampler of
   ``/api/status``'s time series (:class:`~serving.gateway.status.StatusHost`); and the
   drift worker (:class:`~serving.gateway.drift.DriftMonitor`);
4. on shutdown, stops the controller, cancels shadow requests, stops the supervisor (and
   its engines) and closes both clients.

The parts: :mod:`~serving.gateway.openai_api` (the OpenAI routes; the two completion
routes are plain ASGI, dispatched by :class:`GatewayApp` before FastAPI),
:mod:`~serving.gateway.admin` (admin routes), :mod:`~serving.gateway.page` (the
status page at ``/``), :mod:`~serving.gateway.status` (``/api/status``, which it reads),
:mod:`~serving.gateway.auth`,
:mod:`~serving.gateway.accounting`, :mod:`~serving.gateway.routing` (pure) and
:mod:`~serving.gateway.metrics`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from rollout.canary.records import RequestLog
from serving.config import ServeConfig
from serving.engines.load import LoadScraper
from serving.engines.supervisor import Supervisor
from serving.gateway import openapi
from serving.gateway.admin import admin_router
from serving.gateway.auth import AdminDenied, admin_denied_handler
from serving.gateway.bodies import Kind
from serving.gateway.drift import DriftMonitor
from serving.gateway.errors import NESTED_TOO_DEEPLY, error_response
from serving.gateway.faults import Faults
from serving.gateway.limits import BodyTooLarge, check_declared, declared_length, limited_receive
from serving.gateway.metrics import CONTENT_TYPE, Metrics
from serving.gateway.openai_api import PATHS, OpenAIRoutes
from serving.gateway.operator_metrics import OperatorMetrics, RegistryReader
from serving.gateway.page import page_router
from serving.gateway.rollouts import RolloutHost
from serving.gateway.state import GatewayState, StatePublisher
from serving.gateway.status import StatusHost, status_router
from serving.source import ChangeFeed, DeploymentSource, PolicyWriter
from serving.upstream.pool import UpstreamPool

if TYPE_CHECKING:
    from registry.api import Registry

_FAST_ROUTES: dict[str, Kind] = {v: k for k, v in PATHS.items()}


@dataclass
class Gateway:
    """The parts one app shares; what the admin routes act on (an ``AdminContext``)."""

    source: DeploymentSource
    config: ServeConfig
    writer: PolicyWriter | None
    state: GatewayState
    metrics: Metrics
    api: OpenAIRoutes
    session: aiohttp.ClientSession | None = None  # the supervisor's calls to engines
    supervisor: Supervisor | None = None
    rollouts: RolloutHost | None = None  # the canary controller, when this app hosts it

    @property
    def faults(self) -> Faults:
        """Faults injected for game days (the admin routes set them, the hot path applies)."""
        return self.api.faults

    @property
    def drift(self) -> DriftMonitor | None:
        """The served prompts' drift from training, per version (``/admin/drift``)."""
        return self.api.drift

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        engines = {
            k: {"state": s.state.value, "reason": s.reason, "adapters": sorted(s.adapters)}
            for k, s in self.state.engines.items()
        }
        # Ready while every base model has a ready replica: the others' requests go there.
        bases: dict[str, bool] = {}
        for s in self.state.engines.values():
            bases[s.base] = bases.get(s.base, False) or s.ready
        ready = self.state.loaded_once and all(bases.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "engines": engines}
        if not self.state.loaded_once:
            body["reason"] = "the registry has not been read yet"
        if self.state.last_error:
            body["last_error"] = self.state.last_error
        return ready, body

    @property
    def records(self) -> RequestLog:
        """Every finished routed request, by the version routing chose: the canary
        controller's default metric source when it runs in the same process."""
        return self.api.records


class GatewayApp(FastAPI):
    """FastAPI for every route but the two hot ones, which go straight to the OpenAI routes."""

    api: OpenAIRoutes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST":
                kind = _FAST_ROUTES.get(scope["path"])
                if kind is not None:
                    await self.api.handle(scope, receive, send, kind)
                    return
            # Every other route reads its body under the same limit (limits.py).
            limit = self.api.config.max_body_bytes
            try:
                check_declared(declared_length(scope["headers"]), limit)
            except BodyTooLarge as e:
                await e.response()(scope, receive, send)
                return
            receive = limited_receive(receive, limit)
        await super().__call__(scope, receive, send)


def _admin_session(connect_timeout: float, total_timeout: float) -> aiohttp.ClientSession:
    """The supervisor's session for engine admin calls (health, adapters): not the hot path."""
    timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
    return aiohttp.ClientSession(timeout=timeout, skip_auto_headers=("User-Agent",))


def _documented_only() -> Response:
    # GatewayApp.__call__ answers these paths before FastAPI; these routes only document them.
    return error_response(500, "The completion routes are served by GatewayApp.__call__.",
                          code=None)


def create_app(
    source: DeploymentSource,
    config: ServeConfig,
    *,
    writer: PolicyWriter | None = None,
    metrics: Metrics | None = None,
    manage_engines: bool = True,
    controller: Registry | None = None,
    registry: Registry | None = None,
    changes: ChangeFeed | None = None,
) -> FastAPI:
    """The gateway app. Nothing starts at import or here: the lifespan starts the supervisor.

    ``writer`` records policy changes made through the admin routes (the registry);
    without it those routes answer 501. With ``manage_engines=False`` the supervisor is
    built but never runs a pass by itself (tests set the state directly). With
    ``controller`` the app hosts the canary controller over that registry. ``registry``
    (else ``controller``) is what the operator metrics on ``/metrics`` are read from
    (rollouts, reconcile events, training runs); without either they are left out.
    ``changes`` (the registry's :meth:`~registry.api.Registry.change_feed`, PostgreSQL)
    wakes the supervisor when a change commits; the app closes it at shutdown.
    """
    state = GatewayState()
    m = metrics or Metrics()
    drift = DriftMonitor(
        m, lambda: [d for v in state.catalogue.models.values() for d in v.stages.values()],
        lambda d: source.fetch_artifact(d, config.adapter_root))
    gw = Gateway(source=source, config=config, writer=writer, state=state, metrics=m,
                 api=OpenAIRoutes(state, config, m, drift=drift))
    reads = registry if registry is not None else controller
    operator = OperatorMetrics(None if reads is None else RegistryReader(reads))
    if reads is not None:
        m.registry.register(operator)
    status = StatusHost(gw, None if reads is None else reads.overview)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = gw.api.pool = UpstreamPool(config.connect_timeout_s, config.request_timeout_s)
        session = gw.session = _admin_session(config.connect_timeout_s,
                                              config.request_timeout_s)
        publisher = StatePublisher(state, m)
        supervisor = gw.supervisor = Supervisor(
            source, config, publisher, session, changes=changes,
            demand=lambda: (state.adapter_requests, state.adapter_spills))
        scraper = LoadScraper(session, state.scraped_replicas,
                              interval_s=config.load_scrape_interval_s,
                              after_round=publisher.loads_scraped)
        state.loads = scraper.loads
        if manage_engines:
            supervisor.start()
            scraper.start()
        if controller is not None:
            gw.rollouts = RolloutHost.for_gateway(controller, state, gw.records, source, config)
            gw.rollouts.start()
        operator.start()
        status.start()
        drift.start()
        try:
            yield
        finally:
            await asyncio.to_thread(drift.stop)
            await status.stop()
            await asyncio.to_thread(operator.stop)
            if gw.rollouts is not None:
                await asyncio.to_thread(gw.rollouts.stop)
            gw.api.cancel_shadows()
            await scraper.stop()
            await supervisor.stop()
            if changes is not None:
                await asyncio.to_thread(changes.close)
            await session.close()
            pool.close()

    app = GatewayApp(title="reg gateway", version="1", lifespan=lifespan,
                     docs_url=None, redoc_url=None)
    app.api = gw.api
    app.state.gateway = gw

    def openapi_now() -> dict[str, Any]:
        contexts = [e.max_model_len for e in state.engines.values() if e.max_model_len]
        return openapi.with_context_limit(FastAPI.openapi(app),
                                          max(contexts) if contexts else None)

    app.openapi = openapi_now  # type: ignore[method-assign]
    app.state.status = status

    @app.post("/v1/chat/completions", openapi_extra=openapi.chat_completions(),
              response_class=Response, tags=["openai"])
    async def chat_completions(request: Request) -> Response:
        """Create a chat completion (OpenAI-compatible), routed by the model's traffic policy."""
        return _documented_only()

    @app.post("/v1/completions", openapi_extra=openapi.completions(),
              response_class=Response, tags=["openai"])
    async def completions(request: Request) -> Response:
        """Create a text completion (OpenAI-compatible), routed by the model's traffic policy."""
        return _documented_only()

    @app.get("/v1/models", openapi_extra=openapi.models(), tags=["openai"])
    async def list_models(request: Request) -> Response:
        """Served models: each model, and its stage (M:stage) and version (M@vN) pins."""
        denied = gw.api.check_api_key(request)
        if denied is not None:
            return denied
        return JSONResponse(gw.api.models())

    @app.get("/health", openapi_extra=openapi.simple("The gateway process is alive."))
    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/ready", openapi_extra=openapi.ready())
    async def ready() -> Response:
        ok, body = gw.readiness()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", openapi_extra=openapi.metrics())
    async def metrics_route() -> Response:
        return Response(gw.metrics.render(), media_type=CONTENT_TYPE)

    app.include_router(admin_router(gw))
    app.include_router(status_router(status, gw.api.check_api_key))
    app.include_router(page_router())  # the status page at /, over /api/status
    app.add_exception_handler(AdminDenied, admin_denied_handler)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, RecursionError):  # FastAPI's parse of a JSON body
            return error_response(400, NESTED_TOO_DEEPLY, code="invalid_request")
        return error_response(exc.status_code, str(exc.detail), code=None,
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return error_response(400, f"Invalid request: {problems}", code="invalid_request")

    return app
