"""The OpenAI-compatible gateway: route each request to a version, proxy it, measure it.

``create_app(source, config)`` builds the app; its lifespan opens the upstream pool and
starts the :class:`~serving.engines.supervisor.Supervisor`, which starts the engines and keeps the
routing snapshot current. A request:

1. is checked (API key, JSON body, the few fields the gateway reads);
2. is resolved to a version by :func:`serving.gateway.routing.resolve` (pure);
3. is admitted if fewer than ``max_concurrency`` requests are in flight, else 429;
4. is sent to the engine as the adapter ``MODEL@vN``; if that fails before any byte
   reached the client, it is retried once on the production version;
5. is answered with the engine's bytes, ``model`` rewritten to what the client asked,
   with ``x-reg-version`` / ``x-reg-stage`` headers, and measured per version.

The two completion routes are the hot path, and every microsecond there is the
gateway's overhead on every request, so they are plain ASGI: :class:`GatewayApp`
dispatches them before FastAPI's middleware, routing and response classes (py-spy put
a third of the gateway's CPU there). Bodies are read as bytes and parsed once with
``json`` rather than through pydantic models: the gateway reads five fields and vLLM
validates the rest. Response headers are built once per version; metric children are
looked up once per version (:meth:`Metrics.for_version`). The FastAPI routes for the
same paths stay, for the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from rollout.policy import route_key
from serving.config import ServeConfig
from serving.engines.state import GatewayState
from serving.engines.supervisor import Supervisor
from serving.gateway import openapi
from serving.gateway.errors import error_response, normalize_upstream_error
from serving.gateway.metrics import CONTENT_TYPE, Metrics, VersionMetrics
from serving.gateway.routing import Route, RouteError, Target, model_listing, resolve
from serving.source import DeploymentSource, PolicyWriter
from serving.upstream.pool import UpstreamError, UpstreamPool, UpstreamResponse
from serving.upstream.proxy import (
    Rewriter,
    SSESplitter,
    UpstreamFailure,
    has_token,
    is_done,
    is_usage_only_chunk,
    open_upstream,
    read_body,
    usage,
)

Kind = Literal["chat", "completions"]
_PATHS: dict[Kind, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
_FAST_ROUTES: dict[str, Kind] = {v: k for k, v in _PATHS.items()}
_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_STREAM_DROPPED = (b'data: {"error": {"message": "the engine dropped the stream", '
                   b'"type": "server_error", "param": null, "code": "engine_error"}}\n\n')
_END: dict[str, Any] = {"type": "http.response.body", "body": b"", "more_body": False}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass
class _Answer:
    """What the engine answered: a whole body, or an open stream with its first bytes."""

    target: Target
    status: int
    body: bytes = b""
    stream: UpstreamResponse | None = None


@dataclass
class Gateway:
    """Everything the routes share; one per app."""

    source: DeploymentSource
    config: ServeConfig
    writer: PolicyWriter | None
    state: GatewayState
    metrics: Metrics
    session: aiohttp.ClientSession | None = None  # the supervisor's calls to engines
    pool: UpstreamPool | None = None  # the proxied requests
    supervisor: Supervisor | None = None

    def __post_init__(self) -> None:
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._started = int(time.time())
        self._headers: dict[tuple[Target, str], list[tuple[bytes, bytes]]] = {}
        self._keys = [k.encode() for k in self.config.api_keys]

    # -- the OpenAI routes (raw ASGI) ------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, send: Send, kind: Kind) -> None:
        t0 = time.perf_counter()
        auth: bytes | None = None
        session: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value
            elif name == b"x-reg-session":
                session = value
        if self._keys and not self._key_ok(auth):
            return await self._deny_key(scope, receive, send)
        raw = await _read_body(receive)
        try:
            payload = _parse(raw, kind)
        except BadRequest as e:
            self.metrics.rejected.labels("bad_request", "400").inc()
            return await error_response(400, e.message, code="invalid_request",
                                        param=e.param)(scope, receive, send)
        asked: str = payload["model"]
        key, _ = route_key(payload.get("user"),
                           None if session is None else session.decode("latin-1"))
        try:
            route = resolve(self.state.catalogue, asked, key)
        except RouteError as e:
            self.metrics.rejected.labels(e.code, str(e.status)).inc()
            return await error_response(e.status, e.message, code=e.code,
                                        param=e.param)(scope, receive, send)
        if self.state.in_flight >= self.config.max_concurrency:
            self.metrics.rejected.labels("overloaded", "429").inc()
            return await error_response(
                429,
                f"The gateway is answering {self.state.in_flight} requests, its limit "
                f"(REG_MAX_CONCURRENCY={self.config.max_concurrency}); retry after "
                f"{self.config.retry_after_s} s.",
                code="rate_limit_exceeded",
                headers={"retry-after": str(self.config.retry_after_s)},
            )(scope, receive, send)
        stream = payload.get("stream") is True
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
            try:
                answer = await self._open(route, payload, kind, stream, call)
            except UpstreamFailure as e:
                return await call.fail(e)(scope, receive, send)
            headers = self._response_headers(answer.target, call.failover_reason)
            if answer.stream is None:
                if answer.status != 200:
                    call.finish(answer.status)
                    body = normalize_upstream_error(answer.status, answer.body)
                    return await _send_whole(send, answer.status, headers, body)
                tokens = usage(answer.body)
                call.first_token()
                out = Rewriter.for_names(answer.target.adapter, asked)(answer.body)
                await _send_whole(send, 200, headers, out)
                call.finish(200, tokens)
                return
            rewrite = Rewriter.for_names(answer.target.adapter, asked)
            await self._relay(answer.stream, receive, send, headers, call, rewrite, want_usage)
        except BaseException:
            if not call.finished:
                call.finish(499)
            raise
        finally:
            self.state.in_flight -= 1

    async def _relay(
        self, resp: UpstreamResponse, receive: Receive, send: Send,
        headers: list[tuple[bytes, bytes]], call: _Call, rewrite: Rewriter, want_usage: bool,
    ) -> None:
        """vLLM's SSE bytes, passed through as they arrive; accounting always settles."""
        code = 499  # until the stream completes: the client went away
        tokens: tuple[int, int] | None = None
        done = gone = False

        async def watch() -> None:
            # uvicorn drops writes to a closed connection silently: watch for the client
            # going away, and stop the engine's work on the stream when it does.
            nonlocal gone
            msg = await receive()
            if msg["type"] == "http.disconnect" and not done:
                gone = True
                resp.abort()

        watcher = asyncio.create_task(watch())
        split = SSESplitter()
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*headers[:-1], *_SSE_HEADERS]})
            try:
                async for chunk in resp.chunks():
                    out: list[bytes] = []
                    for event in split.feed(chunk):
                        if call.ttft is None and has_token(event):
                            call.first_token()
                        if is_usage_only_chunk(event):
                            tokens = usage(event)
                            if not want_usage:
                                continue
                        elif is_done(event):
                            code = 200
                        out.append(rewrite(event))
                    if out:
                        await send({"type": "http.response.body", "body": b"".join(out),
                                    "more_body": True})
                last = split.rest()
                if last is not None:
                    code = 200 if is_done(last) else code
                    await send({"type": "http.response.body", "body": rewrite(last),
                                "more_body": True})
            except UpstreamError:
                if gone:
                    return
                # Bytes were sent already: no failover possible; end the stream with an error.
                code = 502 if code != 200 else code
                await send({"type": "http.response.body", "body": _STREAM_DROPPED,
                            "more_body": True})
            await send(_END)
        finally:
            done = True
            watcher.cancel()
            resp.release()
            call.finish(code, tokens)

    def _response_headers(self, target: Target, failover: str) -> list[tuple[bytes, bytes]]:
        """Built once per (version, failover reason); content-type last (streams replace it)."""
        key = (target, failover)
        h = self._headers.get(key)
        if h is None:
            h = [(b"x-reg-version", f"v{target.version}".encode()),
                 (b"x-reg-stage", target.stage.encode())]
            if failover:
                h.append((b"x-reg-failover", failover.encode()))
            h.append(_JSON)
            if len(self._headers) > 4096:
                self._headers.clear()
            self._headers[key] = h
        return h

    async def _open(
        self, route: Route, payload: dict[str, Any], kind: Kind, stream: bool, call: _Call
    ) -> _Answer:
        """Send to the chosen version; on a failure before any byte, once to production."""
        try:
            return await self._send(route.target, payload, kind, stream)
        except UpstreamFailure as first:
            if route.failover is None:
                raise
            fo = route.failover
            reason = "engine_down" if first.status == 503 else f"http_{first.status}"
            self.metrics.failovers.labels(
                fo.model, f"v{route.target.version}", f"v{fo.version}", reason
            ).inc()
            call.switch(fo, reason)
            return await self._send(fo, payload, kind, stream)

    async def _send(
        self, target: Target, payload: dict[str, Any], kind: Kind, stream: bool
    ) -> _Answer:
        """Everything up to the first byte the client would get: a whole body, or a stream
        with its first bytes in, so a failure anywhere before that can fail over."""
        down = self.state.engine_unavailable_reason(target.engine)
        if down is not None:
            raise UpstreamFailure(down)
        assert self.pool is not None, "the lifespan opens the pool"
        payload["model"] = target.adapter
        resp = await open_upstream(self.pool, self.state.engines[target.engine].url,
                                   _PATHS[kind], json.dumps(payload).encode())
        if not stream or resp.status != 200:
            return _Answer(target, resp.status, await read_body(resp))
        try:
            await resp.wait_first_chunk()
        except UpstreamError as e:
            resp.release()
            raise UpstreamFailure(f"the engine dropped the stream before its first byte: {e}"
                                  ) from e
        except BaseException:
            resp.abort()
            raise
        return _Answer(target, 200, stream=resp)

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
            answer = await self._send(target, body, kind, False)
            code = str(answer.status)
        except UpstreamFailure as e:
            code = str(e.status)
        finally:
            self.state.shadow_in_flight -= 1
            self.metrics.shadow.labels(*labels, code).inc()
            self.metrics.shadow_duration.labels(*labels).observe(time.perf_counter() - t0)

    def _key_ok(self, auth: bytes | None) -> bool:
        if auth is None:
            return False
        scheme, _, token = auth.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return False
        return any(hmac.compare_digest(token, k) for k in self._keys)

    async def _deny_key(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._key_denied()(scope, receive, send)

    def _key_denied(self) -> Response:
        self.metrics.rejected.labels("unauthorized", "401").inc()
        return error_response(
            401, "Missing or invalid API key: send `Authorization: Bearer <key>` with one of "
            "the keys in REG_API_KEYS.", code="invalid_api_key",
        )

    def _check_api_key(self, request: Request) -> Response | None:
        if not self._keys:
            return None
        auth = request.headers.get("authorization")
        if self._key_ok(None if auth is None else auth.encode("latin-1")):
            return None
        return self._key_denied()

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

    __slots__ = ("failover_reason", "finished", "gw", "m", "t0", "ttft")

    def __init__(self, gw: Gateway, target: Target, t0: float) -> None:
        self.gw = gw
        self.t0 = t0
        self.ttft: float | None = None
        self.failover_reason = ""
        self.finished = False
        self.m: VersionMetrics = gw.metrics.for_version(
            target.model, f"v{target.version}", target.stage)
        self.m.in_flight.inc()

    def switch(self, target: Target, reason: str) -> None:
        self.m.in_flight.dec()
        self.m = self.gw.metrics.for_version(target.model, f"v{target.version}", target.stage)
        self.m.in_flight.inc()
        self.failover_reason = reason

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.t0

    def finish(self, code: int, tokens: tuple[int, int] | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        m = self.m
        m.in_flight.dec()
        m.requests(code).inc()
        m.duration.observe(time.perf_counter() - self.t0)
        if code == 200 and self.ttft is not None:
            m.ttft.observe(self.ttft)
        if tokens is not None:
            m.prompt_tokens.inc(tokens[0])
            m.output_tokens.inc(tokens[1])

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


async def _read_body(receive: Receive) -> bytes:
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts = [body]
    while msg.get("more_body"):
        msg = await receive()
        parts.append(msg.get("body", b""))
    return b"".join(parts)


async def _send_whole(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


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


class GatewayApp(FastAPI):
    """FastAPI for every route but the two hot ones, which go straight to the gateway."""

    gateway: Gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            kind = _FAST_ROUTES.get(scope["path"])
            if kind is not None:
                await self.gateway.handle(scope, receive, send, kind)
                return
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
) -> FastAPI:
    """The gateway app. Nothing starts at import or here: the lifespan starts the supervisor.

    ``writer`` records policy changes made through the admin routes (the registry);
    without it those routes answer 501.
    """
    gw = Gateway(source=source, config=config, writer=writer, state=GatewayState(),
                 metrics=metrics or Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw.pool = UpstreamPool(config.connect_timeout_s, config.request_timeout_s)
        gw.session = _admin_session(config.connect_timeout_s, config.request_timeout_s)
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
            gw.pool.close()

    app = GatewayApp(title="reg gateway", version="1", lifespan=lifespan,
                     docs_url=None, redoc_url=None)
    app.gateway = gw
    app.state.gateway = gw

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

    from serving.gateway.admin import AdminDenied, admin_denied_handler, admin_router

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
