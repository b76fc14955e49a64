"""The OpenAI routes: chat/completions and completions (the hot path), and the model list.

A completion request:

1. is checked (API key, body size, then :func:`serving.gateway.bodies.parse_request`:
   the JSON body and the few fields the gateway reads): bad input is a 4xx in OpenAI's
   shape naming the field, never forwarded;
2. is resolved to a version by :func:`serving.gateway.routing.resolve` (pure), and
   ``max_tokens`` checked against that version's engine context; a version that is
   deployed but degraded (its adapter failed to load) is answered as a failed engine:
   failover to production, or a 503 with the reason;
3. is admitted if fewer than ``max_concurrency`` requests are in flight, else 429;
   a fault injected for its version (:mod:`serving.gateway.faults`, game days) delays
   or fails it here;
4. is sent to the engine as the adapter ``MODEL@vN``; if that fails before any byte
   reached the client, it is retried once on the production version;
5. is answered with the engine's bytes, ``model`` rewritten to what the client asked,
   with ``x-reg-version`` / ``x-reg-stage`` headers, and measured per version
   (:mod:`serving.gateway.accounting`); its prompt is queued for the drift worker of the
   version routing chose (:mod:`serving.gateway.drift`, one append).

Every microsecond on the two completion routes is the gateway's overhead on every
request, so they are plain ASGI: :class:`~serving.gateway.app.GatewayApp` hands them to
:meth:`OpenAIRoutes.handle` before FastAPI's middleware, routing and response classes
(a large share of the gateway's CPU when they went through FastAPI). Bodies are read as
bytes and parsed once with ``json`` rather than through pydantic models: the gateway
reads five fields and vLLM validates the rest. Response headers are built once per
version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rollout.canary.records import RequestLog
from rollout.policy import route_key
from serving.config import ServeConfig
from serving.gateway.accounting import (
    RequestAccount,
    failed_over,
    rejected,
    replica_failed_over,
    shadow_done,
    shadow_dropped,
)
from serving.gateway.auth import ApiKeys
from serving.gateway.bodies import BadRequest, Kind, check_max_tokens, parse_request
from serving.gateway.drift import DriftMonitor
from serving.gateway.errors import (
    NESTED_TOO_DEEPLY,
    error_response,
    normalize_upstream_error,
)
from serving.gateway.faults import Faults
from serving.gateway.limits import BodyTooLarge, read_body
from serving.gateway.metrics import Metrics
from serving.gateway.picker import Fit, pick
from serving.gateway.routing import Route, RouteError, Target, model_listing, resolve
from serving.gateway.state import GatewayState
from serving.upstream.pool import UpstreamError, UpstreamPool, UpstreamResponse
from serving.upstream.proxy import (
    Rewriter,
    SSESplitter,
    UpstreamFailure,
    has_token,
    is_done,
    is_usage_only_chunk,
    open_upstream,
    usage,
)
from serving.upstream.proxy import read_body as read_upstream_body

PATHS: dict[Kind, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_STREAM_DROPPED = (b'data: {"error": {"message": "the engine dropped the stream", '
                   b'"type": "server_error", "param": null, "code": "engine_error"}}\n\n')
_END: dict[str, Any] = {"type": "http.response.body", "body": b"", "more_body": False}


class VersionDegraded(UpstreamFailure):
    """The chosen version is deployed but cannot be served (its adapter failed to sync):
    failed like an engine before any byte, so failover applies."""

    def __init__(self, target: Target, why: str) -> None:
        super().__init__(f"{target.adapter} is deployed but cannot be served: {why}")


@dataclass
class _Answer:
    """What the engine answered: a whole body, or an open stream with its first bytes."""

    target: Target
    status: int
    body: bytes = b""
    stream: UpstreamResponse | None = None
    replica: str = ""  # the replica key that answered (its in-flight count holds it)


class OpenAIRoutes:
    """The OpenAI routes over the gateway's state; ``pool`` is set by the app's lifespan."""

    def __init__(self, state: GatewayState, config: ServeConfig, metrics: Metrics,
                 faults: Faults | None = None, drift: DriftMonitor | None = None) -> None:
        self.state = state
        self.config = config
        self.metrics = metrics
        # The canary analysis's per-request records (the app exposes them as Gateway.records).
        self.records = RequestLog()
        self.faults = faults or Faults(metrics.registry)
        self.drift = drift  # the prompts' drift from training, per version (drift.py)
        self.keys = ApiKeys(config.api_keys)
        self.pool: UpstreamPool | None = None
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._started = int(time.time())
        self._headers: dict[tuple[Target, str], list[tuple[bytes, bytes]]] = {}

    async def handle(self, scope: Scope, receive: Receive, send: Send, kind: Kind) -> None:
        t0 = time.perf_counter()
        auth: bytes | None = None
        session: bytes | None = None
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value
            elif name == b"x-reg-session":
                session = value
            elif name == b"content-length":
                length = value
        if self.keys.required and not self.keys.allows(auth):
            return await self._key_denied()(scope, receive, send)
        try:
            raw = await read_body(receive, self.config.max_body_bytes,
                                  int(length) if length is not None and length.isdigit()
                                  else None)
            payload = parse_request(raw, kind)
        except BodyTooLarge as e:
            rejected(self.metrics, "too_large", 413)
            return await e.response()(scope, receive, send)
        except BadRequest as e:
            return await self._bad_request(e)(scope, receive, send)
        asked: str = payload["model"]
        key, _ = route_key(payload.get("user"),
                           None if session is None else session.decode("latin-1"))
        try:
            route = resolve(self.state.catalogue, asked, key)
        except RouteError as e:
            rejected(self.metrics, e.code, e.status)
            return await error_response(e.status, e.message, code=e.code,
                                        param=e.param)(scope, receive, send)
        if self.state.drained and route.failover is not None and not route.pinned and (
                (route.target.model, route.target.version) in self.state.drained):
            route = Route(route.failover, pinned=False)  # being rolled back: production
        engine = self.state.engines.get(route.target.engine)
        if engine is not None and engine.max_model_len:
            try:
                check_max_tokens(payload, engine.max_model_len)
            except BadRequest as e:
                return await self._bad_request(e)(scope, receive, send)
        if self.state.in_flight >= self.config.max_concurrency:
            rejected(self.metrics, "overloaded", 429)
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
        if self.drift is not None:
            self.drift.observe(route.target.model, route.target.version, kind, payload,
                               len(raw))
        self.state.in_flight += 1
        account = RequestAccount(self.metrics, self.records, route.target, t0, stream=stream)
        answer: _Answer | None = None
        try:
            fault = self.faults.get(route.target.model, route.target.version)
            if fault is not None:
                if fault.latency_s:
                    await asyncio.sleep(fault.latency_s)
                if self.faults.fails(fault):
                    account.finish(500)
                    return await error_response(
                        500, f"Injected fault: {fault.describe()} for "
                        f"{route.target.adapter} (`reg fault clear` ends it).",
                        code="injected_fault", headers={
                            "x-reg-version": f"v{route.target.version}",
                            "x-reg-stage": route.target.stage})(scope, receive, send)
            try:
                answer = await self._open(route, payload, kind, stream, account)
            except UpstreamFailure as e:
                return await self._engine_failed(account, e)(scope, receive, send)
            except BadRequest as e:  # it could not be sent (see _send)
                account.finish(400)
                return await self._bad_request(e)(scope, receive, send)
            headers = self._response_headers(answer.target, account.failover_reason)
            if answer.stream is None:
                if answer.status != 200:
                    account.finish(answer.status)
                    body = normalize_upstream_error(answer.status, answer.body)
                    return await _send_whole(send, answer.status, headers, body)
                tokens = usage(answer.body)
                account.first_token()
                out = Rewriter.for_names(answer.target.adapter, asked)(answer.body)
                await _send_whole(send, 200, headers, out)
                account.finish(200, tokens)
                return
            rewrite = Rewriter.for_names(answer.target.adapter, asked)
            await self._relay(answer.stream, receive, send, headers, account, rewrite,
                              want_usage)
        except BaseException:
            if not account.finished:
                account.finish(499)
            raise
        finally:
            self.state.in_flight -= 1
            if answer is not None:
                self.state.replica_in_flight[answer.replica] -= 1

    async def _relay(
        self, resp: UpstreamResponse, receive: Receive, send: Send,
        headers: list[tuple[bytes, bytes]], account: RequestAccount, rewrite: Rewriter,
        want_usage: bool,
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
                        if account.ttft is None and has_token(event):
                            account.first_token()
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
            account.finish(code, tokens)

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
        self, route: Route, payload: dict[str, Any], kind: Kind, stream: bool,
        account: RequestAccount,
    ) -> _Answer:
        """Send to the chosen version; on a failure before any byte, once to production."""
        try:
            return await self._send(route.target, payload, kind, stream)
        except UpstreamFailure as first:
            if route.failover is None:
                raise
            fo = route.failover
            reason = ("degraded" if isinstance(first, VersionDegraded) else
                      "engine_down" if first.status == 503 else f"http_{first.status}")
            failed_over(self.metrics, route.target, fo, reason)
            account.switch(fo, reason)
            return await self._send(fo, payload, kind, stream)

    async def _send(
        self, target: Target, payload: dict[str, Any], kind: Kind, stream: bool
    ) -> _Answer:
        """Everything up to the first byte the client would get: a whole body, or a stream
        with its first bytes in, so a failure anywhere before that can fail over."""
        if self.state.degraded:
            why = self.state.degraded.get((target.model, target.version))
            if why is not None:
                raise VersionDegraded(target, why)
        down = self.state.engine_unavailable_reason(target.engine)
        if down is not None:
            raise UpstreamFailure(down)
        # The replicas by adapter affinity and load, best first (picker.py); after them,
        # the ready ones the picker left out: the supervisor's view of what an engine
        # holds can lag, and a replica without the adapter answers 404 at once, which
        # moves on like any failure before the first byte.
        views = self.state.replica_views(target.engine)
        if len(views) == 1:  # one engine (the default): nothing to choose
            picks = [views[0].key]
        else:
            ranked = pick(target.adapter, views, time.monotonic(),
                          stale_after_s=self.config.load_stale_after_s)
            picks = [p.key for p in ranked]
            picks += [v.key for v in views if v.ready and v.key not in picks]
            # The supervisor places adapters on replicas by these counts (placement.py).
            demand = self.state.adapter_requests
            demand[target.adapter] = demand.get(target.adapter, 0) + 1
            if ranked and ranked[0].fit is Fit.free_slot:  # its holders are queued
                spills = self.state.adapter_spills
                spills[target.adapter] = spills.get(target.adapter, 0) + 1
        payload["model"] = target.adapter
        try:
            body = json.dumps(payload).encode()
        except RecursionError as e:
            # Parsed a few frames higher up the stack than it is written here: a body
            # nested within a few levels of the interpreter's limit passes one, not both.
            raise BadRequest(NESTED_TOO_DEEPLY) from e
        for n, key in enumerate(picks):
            try:
                return await self._send_to(key, target, body, kind, stream)
            except UpstreamFailure as e:
                if n == len(picks) - 1:
                    raise
                # Another replica first; production only after the last.
                replica_failed_over(self.metrics, self._replica_label(key), e.status)
        raise UpstreamFailure(f"no ready replica of the engine for {target.engine}")

    def _replica_label(self, key: str) -> str:
        status = self.state.engines.get(key)
        return key if status is None else status.label

    async def _send_to(self, replica: str, target: Target, body: bytes, kind: Kind,
                       stream: bool) -> _Answer:
        """One replica's answer up to its first byte; counted in its in-flight until the
        request is settled (the handler releases it)."""
        assert self.pool is not None, "the lifespan opens the pool"
        engine = self.state.engines[replica]
        in_flight = self.state.replica_in_flight
        in_flight[replica] = in_flight.get(replica, 0) + 1
        try:
            resp = await open_upstream(self.pool, engine.url, PATHS[kind], body)
            self.metrics.replica_requests.labels(engine.label).inc()
            if not stream or resp.status != 200:
                return _Answer(target, resp.status, await read_upstream_body(resp),
                               replica=replica)
            try:
                await resp.wait_first_chunk()
            except UpstreamError as e:
                resp.release()
                raise UpstreamFailure(
                    f"the engine dropped the stream before its first byte: {e}") from e
            except BaseException:
                resp.abort()
                raise
        except BaseException:
            in_flight[replica] -= 1
            raise
        return _Answer(target, 200, stream=resp, replica=replica)

    def _engine_failed(self, account: RequestAccount, e: UpstreamFailure) -> Response:
        """The engine failed before any byte was sent (and failover too, if it applied)."""
        status = 503 if e.status in (503, 404) or e.status < 500 else 502
        account.finish(status)
        if isinstance(e, VersionDegraded):
            return error_response(
                503, f"{e.reason}. The request was not answered; the gateway retries "
                "loading it (with a backoff), or pin another version.",
                code="version_degraded",
                headers={"retry-after": str(self.config.retry_after_s)})
        message = e.reason
        if e.body and status == 502:
            with contextlib.suppress(ValueError, AttributeError):
                message += ": " + json.loads(normalize_upstream_error(e.status, e.body))[
                    "error"]["message"]
        return error_response(
            status, f"{message}. The request was not answered; retry shortly.",
            code="engine_unavailable" if status == 503 else "engine_error",
            headers={"retry-after": str(self.config.retry_after_s)},
        )

    # -- shadow requests -------------------------------------------------------------------

    def _spawn_shadow(self, target: Target, payload: dict[str, Any], kind: Kind) -> None:
        if self.state.shadow_in_flight >= self.config.max_shadow_in_flight:
            shadow_dropped(self.metrics, target)
            return
        body = {k: v for k, v in payload.items() if k not in ("stream", "stream_options")}
        task = asyncio.create_task(self._shadow(target, body, kind))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, target: Target, body: dict[str, Any], kind: Kind) -> None:
        """Send a mirrored request, measure it, and throw the answer away."""
        self.state.shadow_in_flight += 1
        t0 = time.perf_counter()
        code = "error"
        try:
            answer = await self._send(target, body, kind, False)
            code = str(answer.status)
        except UpstreamFailure as e:
            code = str(e.status)
        except BadRequest:
            code = "400"
        finally:
            self.state.shadow_in_flight -= 1
            shadow_done(self.metrics, target, code, time.perf_counter() - t0)

    def cancel_shadows(self) -> None:
        for t in list(self._shadow_tasks):
            t.cancel()

    # -- the model list and API keys on FastAPI routes -------------------------------------

    def _bad_request(self, e: BadRequest) -> Response:
        rejected(self.metrics, "bad_request", 400)
        return error_response(400, e.message, code="invalid_request", param=e.param)

    def _key_denied(self) -> Response:
        rejected(self.metrics, "unauthorized", 401)
        return error_response(
            401, "Missing or invalid API key: send `Authorization: Bearer <key>` with one of "
            "the keys in REG_API_KEYS.", code="invalid_api_key",
        )

    def check_api_key(self, request: Request) -> Response | None:
        """None when the request may use the OpenAI routes, else the 401 to answer."""
        if not self.keys.required:
            return None
        auth = request.headers.get("authorization")
        if self.keys.allows(None if auth is None else auth.encode("latin-1")):
            return None
        return self._key_denied()

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: each model, and its stage (M:stage) and version (M@vN) pins."""
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


async def _send_whole(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
