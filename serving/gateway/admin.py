"""Admin routes: status, reload, traffic policy, adapters. All need the admin token.

``Authorization: Bearer $REG_ADMIN_TOKEN``; with no token configured the routes
are disabled (403), never open. Policy changes go through the registry (an
audited event), so the gateway picks them up like any other change.
"""

from __future__ import annotations

import asyncio
import hmac
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from rollout.policy import Shadow, TrafficError, make_policy
from serving.engines.adapters import AdapterPathError, ensure_inside
from serving.gateway.errors import error_response

if TYPE_CHECKING:
    from serving.gateway.app import Gateway


class AdminDenied(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ShadowBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str
    percent: int = Field(ge=1, le=100)


class TrafficBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights: dict[str, int]
    shadow: ShadowBody | None = None
    reason: str = ""


class LoadAdapterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1)
    engine: str | None = Field(default=None, description="Base model path; optional with one.")


class UnloadAdapterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    engine: str | None = None


def require_admin(request: Request) -> str:
    """The admin token check (a dependency of every admin route); returns the actor."""
    token = request.app.state.gateway.config.admin_token
    if not token:
        raise AdminDenied(403, "Admin routes are disabled: start the gateway with "
                          "REG_ADMIN_TOKEN set.")
    auth = request.headers.get("authorization", "")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise AdminDenied(401, "Admin routes need `Authorization: Bearer $REG_ADMIN_TOKEN`.")
    return "admin-api"


# Module level: FastAPI resolves these annotations by name (``from __future__ import
# annotations``), so a dependency alias defined inside a function would not be found.
Admin = Annotated[str, Depends(require_admin)]


def admin_router(gw: Gateway) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["admin"])

    @router.get("/status")
    async def status(_: Admin) -> dict[str, Any]:
        """Engines, loaded adapters, the routing snapshot and the last error."""
        st = gw.state
        return {
            "marker": st.catalogue.marker,
            "in_flight": st.in_flight,
            "last_error": st.last_error,
            "engines": {
                k: {"url": e.url, "state": e.state.value, "reason": e.reason, "pid": e.pid,
                    "adapters": sorted(e.adapters), "restarts": e.restarts}
                for k, e in st.engines.items()
            },
            "models": {
                name: {"traffic": v.policy.describe(),
                       "stages": {s: f"v{d.version}" for s, d in sorted(v.stages.items())}}
                for name, v in st.catalogue.models.items()
            },
        }

    @router.post("/reload")
    async def reload(_: Admin) -> dict[str, Any]:
        """Re-read the registry and re-sync adapters now."""
        assert gw.supervisor is not None
        await gw.supervisor.step(force=True)
        return {"marker": gw.state.catalogue.marker, "last_error": gw.state.last_error}

    @router.put("/traffic/{model}")
    async def set_traffic(model: str, body: TrafficBody, actor: Admin) -> Response:
        """Set a model's traffic policy (recorded in the registry as an event)."""
        if gw.writer is None:
            return error_response(501, "This gateway has no registry to record policies in.",
                                  code="not_supported")
        view = gw.state.catalogue.models.get(model)
        shadow = None if body.shadow is None else Shadow(body.shadow.stage, body.shadow.percent)
        try:
            policy = make_policy(model, body.weights, shadow,
                                 serving_stages=() if view is None else view.stages.keys())
        except TrafficError as e:
            return error_response(400, str(e), code="invalid_traffic", param="weights")
        await asyncio.to_thread(gw.writer.set_traffic, model, policy.weights, policy.shadow,
                                actor, body.reason or "admin route")
        assert gw.supervisor is not None
        await gw.supervisor.step()
        return JSONResponse({"model": model, "traffic": policy.describe()})

    def _engine(key: str | None) -> str:
        keys = list(gw.state.engines)
        if key is None and len(keys) == 1:
            return keys[0]
        if key not in keys:
            raise AdminDenied(404, f"No engine {key!r}; engines: {', '.join(keys) or 'none'}.")
        return key

    @router.get("/adapters")
    async def adapters(_: Admin) -> dict[str, Any]:
        """Adapters each engine has loaded."""
        return {k: sorted(e.adapters) for k, e in gw.state.engines.items()}

    @router.post("/adapters/load")
    async def load_adapter(body: LoadAdapterBody, _: Admin) -> Response:
        """Load an adapter by hand. Its path must lie inside the artifact store."""
        assert gw.supervisor is not None
        try:
            path = ensure_inside(Path(body.path), gw.config.adapter_root)
        except AdapterPathError as e:
            return error_response(400, f"{e} ({e.hint})", code="path_outside_store",
                                  param="path")
        key = _engine(body.engine)
        try:
            await gw.supervisor.load_manual(key, body.name, path)
        except RuntimeError as e:
            return error_response(502, str(e), code="engine_error")
        return JSONResponse({"loaded": body.name, "engine": key})

    @router.post("/adapters/unload")
    async def unload_adapter(body: UnloadAdapterBody, _: Admin) -> Response:
        """Unload an adapter loaded by hand. Deployed versions follow the registry instead."""
        assert gw.supervisor is not None
        key = _engine(body.engine)
        deployed = {d.adapter_name for d in gw.supervisor.deployments}
        if body.name in deployed:
            return error_response(
                409, f"{body.name} is deployed (a stage points at it); move the stage with "
                "`reg promote` or `reg rollback` instead.", code="adapter_deployed", param="name")
        try:
            await gw.supervisor.unload_manual(key, body.name)
        except RuntimeError as e:
            return error_response(502, str(e), code="engine_error")
        return JSONResponse({"unloaded": body.name, "engine": key})

    return router


async def admin_denied_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AdminDenied)
    codes = {401: "unauthorized", 403: "forbidden", 404: "not_found"}
    return error_response(exc.status, exc.message, code=codes.get(exc.status),
                          headers={"www-authenticate": "Bearer"} if exc.status == 401 else None)
