"""The OpenAI-compatible gateway: route each request to a version, proxy it, measure it.

``create_app(source, config)`` builds the FastAPI app; its lifespan opens the
upstream session and starts the :class:`~serving.supervisor.Supervisor`, which
starts the engines and keeps the routing snapshot current. A request:

1. is checked (API key, JSON body, the few fields the gateway reads);
2. is resolved to a version by :func:`serving.routing.resolve` (pure);
3. is admitted if fewer than ``max_concurrency`` requests are in flight, else 429;
4. is sent to the engine as the adapter ``MODEL@vN``; if that fails before any byte
   reached the client, it is retried once on the production version;
5. is answered with the engine's bytes, ``model`` rewritten to what the client asked,
   with ``x-reg-version`` / ``x-reg-stage`` headers, and measured per version.

Bodies are read as bytes and parsed once with ``json`` rather than through pydantic
models: the gateway reads five fields and vLLM validates the rest, and the
per-request CPU budget is a fraction of a millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from rollout.traffic import route_key
from serving import openapi
from serving.config import ServeConfig
from serving.errors import error_response, normalize_upstream_error
from serving.metrics import CONTENT_TYPE, Metrics
from serving.proxy import (
    Rewriter,
    UpstreamFailure,
    has_token,
    is_done,
    is_usage_only_chunk,
    iter_events,
    new_session,
    open_upstream,
    read_body,
    usage,
)
from serving.routing import Route, RouteError, Target, model_listing, resolve
from serving.source import DeploymentSource, PolicyWriter
from serving.state import GatewayState
from serving.supervisor import Supervisor

Kind = Literal["chat", "completions"]
_PATHS: dict[Kind, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass
class Gateway:
    """Everything the routes share; one per app."""

    source: DeploymentSource
    config: ServeConfig
    writer: PolicyWriter | None
    state: GatewayState
    metrics: Metrics
    session: aiohttp.ClientSession | None = None
    supervisor: Supervisor | None = None

    def __post_init__(self) -> None:
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._started = int(time.time())

    # -- the OpenAI routes -----------------------------------------------------------------

    async def handle(self, request: Request, kind: Kind) -> Response:
        t0 = time.perf_counter()
        denied = self._check_api_key(request)
        if denied is not None:
            return denied
        try:
            payload = _parse(await request.body(), kind)
        except BadRequest as e:
            self.metrics.rejected.labels("bad_request", "400").inc()
            return error_response(400, e.message, code="invalid_request", param=e.param)
        asked: str = payload["model"]
        key, _ = route_key(payload.get("user"), request.headers.get("x-reg-session"))
        try:
            route = resolve(self.state.catalogue, asked, key)
        except RouteError as e:
            self.metrics.rejected.labels(e.code, str(e.status)).inc()
            return error_response(e.status, e.message, code=e.code, param=e.param)
        if self.state.in_flight >= self.config.max_concurrency:
            self.metrics.rejected.labels("overloaded", "429").inc()
            return error_response(
                429,
                f"The gateway is answering {self.state.in_flight} requests, its limit "
                f"(REG_MAX_CONCURRENCY={self.config.max_concurrency}); retry after "
                f"{self.config.retry_after_s} s.",
                code="rate_limit_exceeded",
                headers={"retry-after": str(self.config.retry_after_s)},
            )
        stream = bool(payload.get("stream"))
        want_usage = False
        if stream:
            opts = payload.get("stream_options") or {}
            want_usage = bool(opts.get("include_usage"))
            # Always ask for usage, to count tokens; the extra chunk is dropped if unasked.
            payload["stream_options"] = {**opts, "include_usage": True}
        if route.shadow is not None:
            self._spawn_shadow(route.shadow, payload, kind)
        self.state.in_flight += 1
        call = _Call(self, route.target, t0)
        try:
            resp, target = await self._open(route, payload, kind, call)
        except UpstreamFailure as e:
            self.state.in_flight -= 1
            return call.fail(e)
        except BaseException:
            self.state.in_flight -= 1
            call.finish(499)
            raise
        headers = {"x-reg-version": f"v{target.version}", "x-reg-stage": target.stage}
        if call.failover_reason:
            headers["x-reg-failover"] = call.failover_reason
        rewrite = Rewriter.for_names(target.adapter, asked)
        if not stream or resp.status != 200:
            try:
                data = await read_body(resp)
            except UpstreamFailure as e:
                self.state.in_flight -= 1
                return call.fail(e)
            self.state.in_flight -= 1
            if resp.status != 200:
                call.finish(resp.status)
                return Response(normalize_upstream_error(resp.status, data),
                                status_code=resp.status, media_type="application/json",
                                headers=headers)
            tokens = usage(data)
            call.first_token()
            call.finish(200, tokens)
            return Response(rewrite(data), media_type="application/json", headers=headers)
        return _Stream(self, call, resp, rewrite, want_usage, headers)

    async def _open(
        self, route: Route, payload: dict[str, Any], kind: Kind, call: _Call
    ) -> tuple[aiohttp.ClientResponse, Target]:
        """Send to the chosen version; on a failure before any byte, once to production."""
        try:
            return await self._send(route.target, payload, kind), route.target
        except UpstreamFailure as first:
            if route.failover is None:
                raise
            fo = route.failover
            reason = "engine_down" if first.status == 503 else f"http_{first.status}"
            self.metrics.failovers.labels(
                fo.model, f"v{route.target.version}", f"v{fo.version}", reason
            ).inc()
            call.switch(fo, reason)
            return await self._send(fo, payload, kind), fo

    async def _send(
        self, target: Target, payload: dict[str, Any], kind: Kind
    ) -> aiohttp.ClientResponse:
        down = self.state.engine_unavailable_reason(target.engine)
        if down is not None:
            raise UpstreamFailure(down)
        assert self.session is not None, "the lifespan opens the session"
        url = self.state.engines[target.engine].url + _PATHS[kind]
        payload["model"] = target.adapter
        return await open_upstream(self.session, url, json.dumps(payload).encode())

    def _spawn_shadow(self, target: Target, payload: dict[str, Any], kind: Kind) -> None:
        if self.state.shadow_in_flight >= self.config.max_shadow_in_flight:
            self.metrics.shadow.labels(target.model, f"v{target.version}", target.stage,
                                       "dropped").inc()
            return
        body = {k: v for k, v in payload.items() if k not in ("stream", "stream_options")}
        task = asyncio.create_task(self._shadow(target, body, kind))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, target: Target, body: dict[str, Any], kind: Kind) -> None:
        """Send a mirrored request, measure it, and throw the answer away."""
        labels = (target.model, f"v{target.version}", target.stage)
        self.state.shadow_in_flight += 1
        t0 = time.perf_counter()
        code = "error"
        try:
            resp = await self._send(target, body, kind)
            await read_body(resp)
            code = str(resp.status)
        except UpstreamFailure as e:
            code = str(e.status)
        finally:
            self.state.shadow_in_flight -= 1
            self.metrics.shadow.labels(*labels, code).inc()
            self.metrics.shadow_duration.labels(*labels).observe(time.perf_counter() - t0)

    def _check_api_key(self, request: Request) -> Response | None:
        keys = self.config.api_keys
        if not keys:
            return None
        token = _bearer(request)
        if token is not None and any(hmac.compare_digest(token, k) for k in keys):
            return None
        self.metrics.rejected.labels("unauthorized", "401").inc()
        return error_response(
            401, "Missing or invalid API key: send `Authorization: Bearer <key>` with one of "
            "the keys in REG_API_KEYS.", code="invalid_api_key",
        )

    # -- other routes ----------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        cat = self.state.catalogue
        data: list[dict[str, Any]] = []
        for model_id, d, summary in model_listing(cat):
            item: dict[str, Any] = {
                "id": model_id, "object": "model", "created": self._started,
                "owned_by": "reg", "summary": summary,
            }
            if d is not None:
                item.update(version=f"v{d.version}", stages=list(d.stages),
                            adapter=d.adapter_name)
            view = cat.models.get(model_id)
            if view is not None:
                item.update(
                    traffic=dict(view.policy.weights),
                    shadow=None if view.policy.shadow is None else {
                        view.policy.shadow.stage: view.policy.shadow.percent},
                    stages={s: f"v{x.version}" for s, x in sorted(view.stages.items())},
                    versions=[f"v{v}" for v in sorted(view.versions)],
                )
            data.append(item)
        return {"object": "list", "data": data}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        engines = {
            k: {"state": s.state.value, "reason": s.reason, "adapters": sorted(s.adapters)}
            for k, s in self.state.engines.items()
        }
        ready = self.state.loaded_once and all(s.ready for s in self.state.engines.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "engines": engines}
        if not self.state.loaded_once:
            body["reason"] = "the registry has not been read yet"
        if self.state.last_error:
            body["last_error"] = self.state.last_error
        return ready, body


class _Call:
    """Accounting for one request: in-flight gauge, status, duration, TTFT, tokens."""

    def __init__(self, gw: Gateway, target: Target, t0: float) -> None:
        self.gw = gw
        self.t0 = t0
        self.ttft: float | None = None
        self.failover_reason = ""
        self._labels = (target.model, f"v{target.version}", target.stage)
        gw.metrics.in_flight.labels(*self._labels).inc()

    def switch(self, target: Target, reason: str) -> None:
        self.gw.metrics.in_flight.labels(*self._labels).dec()
        self._labels = (target.model, f"v{target.version}", target.stage)
        self.gw.metrics.in_flight.labels(*self._labels).inc()
        self.failover_reason = reason

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.t0

    def finish(self, code: int, tokens: tuple[int, int] | None = None) -> None:
        m, labels = self.gw.metrics, self._labels
        m.in_flight.labels(*labels).dec()
        m.requests.labels(*labels, str(code)).inc()
        m.duration.labels(*labels).observe(time.perf_counter() - self.t0)
        if code == 200 and self.ttft is not None:
            m.ttft.labels(*labels).observe(self.ttft)
        if tokens is not None:
            m.prompt_tokens.labels(*labels).inc(tokens[0])
            m.output_tokens.labels(*labels).inc(tokens[1])

    def fail(self, e: UpstreamFailure) -> Response:
        """The engine failed before any byte was sent (and failover too, if it applied)."""
        status = 503 if e.status in (503, 404) or e.status < 500 else 502
        self.finish(status)
        message = e.reason
        if e.body and status == 502:
            with contextlib.suppress(ValueError, AttributeError):
                message += ": " + json.loads(normalize_upstream_error(e.status, e.body))[
                    "error"]["message"]
        return error_response(
            status, f"{message}. The request was not answered; retry shortly.",
            code="engine_unavailable" if status == 503 else "engine_error",
            headers={"retry-after": str(self.gw.config.retry_after_s)},
        )


class _Stream(StreamingResponse):
    """vLLM's SSE bytes, passed through event by event; accounting always settles.

    ``__call__`` wraps Starlette's in ``try/finally`` so the in-flight count and metrics
    are settled even when the client disconnects before the first event.
    """

    def __init__(
        self, gw: Gateway, call: _Call, resp: aiohttp.ClientResponse, rewrite: Rewriter,
        want_usage: bool, headers: Mapping[str, str],
    ) -> None:
        self.gw, self.call, self.resp = gw, call, resp
        self.rewrite, self.want_usage = rewrite, want_usage
        self.tokens: tuple[int, int] | None = None
        self.code = 499  # until the stream completes: the client went away
        super().__init__(self._events(), media_type="text/event-stream",
                         headers={**headers, "cache-control": "no-cache"})

    async def _events(self) -> AsyncIterator[bytes]:
        try:
            async for event in iter_events(self.resp):
                if self.call.ttft is None and has_token(event):
                    self.call.first_token()
                if is_usage_only_chunk(event):
                    self.tokens = usage(event)
                    if not self.want_usage:
                        continue
                elif is_done(event):
                    self.code = 200
                yield self.rewrite(event)
        except (aiohttp.ClientError, TimeoutError, OSError):
            # Bytes were sent already: no failover possible; end the stream with an error.
            self.code = 502
            yield (b'data: {"error": {"message": "the engine dropped the stream", '
                   b'"type": "server_error", "param": null, "code": "engine_error"}}\n\n')

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.resp.release()
            self.gw.state.in_flight -= 1
            self.call.finish(self.code, self.tokens)


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _parse(raw: bytes, kind: Kind) -> dict[str, Any]:
    """The body as a dict, with the fields the gateway reads checked; vLLM checks the rest."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"The request body is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: a model name, MODEL:STAGE or MODEL@vN.", "model")
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) for m in messages
        ):
            raise BadRequest("'messages' must be a non-empty array of message objects.",
                             "messages")
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, (str, list)):
            raise BadRequest("'prompt' is required: a string or an array.", "prompt")
    for name, types in (("stream", bool), ("user", str), ("stream_options", dict)):
        value = body.get(name)
        if value is not None and not isinstance(value, types):
            raise BadRequest(f"'{name}' must be a {types.__name__}, got {value!r}.", name)
    return body


# -- the app -------------------------------------------------------------------------------

_FAST_ROUTES: dict[str, Kind] = {v: k for k, v in _PATHS.items()}


class _FastPath:
    """ASGI middleware: POSTs to the completion routes go straight to the gateway."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            kind = _FAST_ROUTES.get(scope["path"])
            if kind is not None:
                response = await self.gateway.handle(Request(scope, receive), kind)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)



def create_app(
    source: DeploymentSource,
    config: ServeConfig,
    *,
    writer: PolicyWriter | None = None,
    metrics: Metrics | None = None,
    manage_engines: bool = True,
) -> FastAPI:
    """The gateway app. Nothing starts at import or here: the lifespan starts the supervisor.

    ``writer`` records policy changes made through the admin routes (the registry);
    without it those routes answer 501.
    """
    gw = Gateway(source=source, config=config, writer=writer, state=GatewayState(),
                 metrics=metrics or Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw.session = new_session(config.connect_timeout_s, config.request_timeout_s)
        gw.supervisor = Supervisor(source, config, gw.state, gw.metrics, gw.session)
        if manage_engines:
            gw.supervisor.start()
        try:
            yield
        finally:
            for t in list(gw._shadow_tasks):
                t.cancel()
            await gw.supervisor.stop()
            await gw.session.close()

    app = FastAPI(title="reg gateway", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.gateway = gw

    @app.post("/v1/chat/completions", openapi_extra=openapi.chat_completions(),
              response_class=Response, tags=["openai"])
    async def chat_completions(request: Request) -> Response:
        """Create a chat completion (OpenAI-compatible), routed by the model's traffic policy."""
        return await gw.handle(request, "chat")

    @app.post("/v1/completions", openapi_extra=openapi.completions(),
              response_class=Response, tags=["openai"])
    async def completions(request: Request) -> Response:
        """Create a text completion (OpenAI-compatible), routed by the model's traffic policy."""
        return await gw.handle(request, "completions")

    @app.get("/v1/models", openapi_extra=openapi.models(), tags=["openai"])
    async def list_models(request: Request) -> Response:
        """Served models: each model, and its stage (M:stage) and version (M@vN) pins."""
        denied = gw._check_api_key(request)
        if denied is not None:
            return denied
        return JSONResponse(gw.models())

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

    # The two hot routes skip Starlette's routing and exception layers (about a third of the
    # gateway's CPU per request, measured with py-spy); the routes above stay for OpenAPI.
    app.add_middleware(_FastPath, gateway=gw)

    from serving.admin import AdminDenied, admin_denied_handler, admin_router

    app.include_router(admin_router(gw))
    app.add_exception_handler(AdminDenied, admin_denied_handler)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), code=None,
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return error_response(400, f"Invalid request: {problems}", code="invalid_request")

    return app
