"""Admin routes: status, reload, traffic policy, adapters, faults, drift. All need the admin
token.

``Authorization: Bearer $REG_ADMIN_TOKEN`` (checked by :mod:`serving.gateway.auth`, on
every route of the router); with no token configured the routes are disabled (403),
never open. Policy changes go through the registry (an audited event), so the gateway
picks them up like any other change.

The routes act on an :class:`AdminContext` (the gateway's state, settings, policy
writer and engine supervisor), not on the app that serves them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt
from starlette.responses import JSONResponse, Response

from registry.deployments import Deployment
from registry.errors import NotFound, RegistryError
from registry.traffic import InvalidTraffic, Shadow
from registry.versions import parse_version_ref
from serving.config import ServeConfig
from serving.engines.adapters import AdapterPathError, AdapterRefused, loadable
from serving.gateway.auth import ADMIN_ACTOR, AdminDenied, admin_guard
from serving.gateway.drift import DriftMonitor, DriftReport
from serving.gateway.errors import error_response
from serving.gateway.faults import MAX_LATENCY_MS, Fault, Faults
from serving.gateway.state import GatewayState
from serving.source import PolicyWriter


class EngineControl(Protocol):
    """What the admin routes ask of the engine supervisor."""

    @property
    def deployments(self) -> Sequence[Deployment]: ...

    async def step(self, *, force: bool = False) -> None: ...

    async def load_manual(self, key: str, name: str, path: Path) -> None: ...

    async def unload_manual(self, key: str, name: str) -> None: ...


class AdminContext(Protocol):
    """What the admin routes act on; ``supervisor`` is None until the app has started."""

    @property
    def state(self) -> GatewayState: ...

    @property
    def config(self) -> ServeConfig: ...

    @property
    def writer(self) -> PolicyWriter | None: ...

    @property
    def supervisor(self) -> EngineControl | None: ...

    @property
    def faults(self) -> Faults: ...

    @property
    def drift(self) -> DriftMonitor | None: ...


# Types only: the values are judged by the registry's one policy validator, as `reg traffic`'s.
class ShadowBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str
    percent: StrictInt


class TrafficBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights: dict[str, StrictInt]
    shadow: ShadowBody | None = None
    reason: str = ""


class FaultBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error_rate: StrictFloat | StrictInt = Field(default=0, ge=0, le=1,
                                                description="Share of requests failed, 0-1.")
    latency_ms: StrictInt = Field(default=0, ge=0, le=MAX_LATENCY_MS,
                                  description="Delay added before each request.")
    reason: str = ""
    actor: str | None = Field(default=None, max_length=200,
                              description="Who asks (`reg fault` sends the user); audited.")


class LoadAdapterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1)
    engine: str | None = Field(default=None, description="Base model path; optional with one.")


class UnloadAdapterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    engine: str | None = None


def _with_hint(e: RegistryError) -> str:
    """The message `reg` prints as ``Error: ...``, with its ``Hint: ...`` in brackets."""
    return f"{e} ({e.hint})" if e.hint else str(e)


def admin_router(gw: AdminContext) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["admin"],
                       dependencies=[Depends(admin_guard(gw.config.admin_token))])

    @router.get("/status")
    async def status() -> dict[str, Any]:
        """Engines, loaded adapters, the routing snapshot and the last error."""
        st = gw.state
        return {
            "marker": st.catalogue.marker,
            "in_flight": st.in_flight,
            "last_error": st.last_error,
            "engines": {
                k: {"url": e.url, "state": e.state.value, "reason": e.reason, "pid": e.pid,
                    "adapters": sorted(e.adapters), "restarts": e.restarts,
                    "generation": e.generation,
                    "max_model_len": e.max_model_len, "notes": list(e.notes)}
                for k, e in st.engines.items()
            },
            "models": {
                name: {"traffic": v.policy.describe(),
                       "stages": {s: f"v{d.version}" for s, d in sorted(v.stages.items())}}
                for name, v in st.catalogue.models.items()
            },
        }

    @router.post("/reload")
    async def reload() -> dict[str, Any]:
        """Re-read the registry and re-sync adapters now."""
        assert gw.supervisor is not None
        await gw.supervisor.step(force=True)
        return {"marker": gw.state.catalogue.marker, "last_error": gw.state.last_error}

    @router.put("/traffic/{model}")
    async def set_traffic(model: str, body: TrafficBody) -> Response:
        """Set a model's traffic policy (recorded in the registry as an event)."""
        if gw.writer is None:
            return error_response(501, "This gateway has no registry to record policies in.",
                                  code="not_supported")
        shadow = None if body.shadow is None else Shadow(body.shadow.stage, body.shadow.percent)
        try:
            policy = await asyncio.to_thread(gw.writer.set_traffic, model, body.weights, shadow,
                                             ADMIN_ACTOR, body.reason or "admin route")
        except InvalidTraffic as e:
            return error_response(400, _with_hint(e), code="invalid_traffic", param="weights")
        except NotFound as e:
            return error_response(404, _with_hint(e), code="model_not_found", param=None)
        except RegistryError as e:  # e.g. a malformed model name
            return error_response(400, _with_hint(e), code="invalid_request", param=None)
        assert gw.supervisor is not None
        await gw.supervisor.step()
        return JSONResponse({"model": model, "traffic": policy.describe()})

    @router.get("/faults")
    async def faults() -> dict[str, Any]:
        """Faults injected now (game days), by version."""
        return {"faults": [_fault_json(m, v, f) for (m, v), f in sorted(gw.faults.all().items())]}

    @router.put("/faults/{model}/{version}")
    async def set_fault(model: str, version: str, body: FaultBody) -> Response:
        """Make a version fail or slow on purpose (recorded in the registry as an event)."""
        fault = Fault(float(body.error_rate), body.latency_ms / 1000)
        if not fault.error_rate and not fault.latency_s:
            return error_response(
                400, "Nothing to inject: give error_rate (0-1) or latency_ms; "
                f"`DELETE /admin/faults/{model}/{version}` clears a fault.",
                code="invalid_request", param="error_rate")
        return await _record_fault(model, version, fault, body, "fault.set")

    @router.delete("/faults/{model}/{version}")
    async def clear_fault(model: str, version: str, reason: str = "",
                          actor: str | None = None) -> Response:
        """Stop injecting a version's fault (recorded in the registry as an event)."""
        return await _record_fault(model, version, None,
                                   FaultBody(reason=reason, actor=actor), "fault.cleared")

    async def _record_fault(model: str, version: str, fault: Fault | None, body: FaultBody,
                            kind: str) -> Response:
        # Recorded first: a fault nobody can find in the audit log is never injected.
        if gw.writer is None:
            return error_response(501, "This gateway has no registry to record faults in.",
                                  code="not_supported")
        try:
            number = parse_version_ref(version).number
        except RegistryError as e:
            return error_response(400, _with_hint(e), code="invalid_request", param="version")
        current = gw.faults.get(model, number)
        if fault is None and current is None:
            return error_response(
                404, f"No fault is injected into {model} v{number}; `GET /admin/faults` "
                "lists them.", code="fault_not_found")
        shown = fault or current
        assert shown is not None
        data = {**_fault_json(model, number, shown), "via": ADMIN_ACTOR}
        what = "injected" if fault is not None else "cleared"
        message = f"fault {what}: {shown.describe()}" + (f" ({body.reason})" if body.reason
                                                         else "")
        try:
            await asyncio.to_thread(gw.writer.audit, kind, model=model, version=number,
                                    actor=body.actor or ADMIN_ACTOR, message=message, data=data)
        except NotFound as e:
            return error_response(404, _with_hint(e), code="model_not_found")
        except RegistryError as e:  # e.g. a malformed model name
            return error_response(400, _with_hint(e), code="invalid_request")
        if fault is None:
            gw.faults.clear(model, number)
            return JSONResponse({"cleared": _fault_json(model, number, shown)})
        gw.faults.set(model, number, fault)
        return JSONResponse({"fault": _fault_json(model, number, fault)})

    @router.get("/drift", response_model=DriftReport)
    async def drift(model: str | None = None) -> Response:
        """Per deployed version: prompts in the window, PSI per feature against its training
        prompts, the verdict and the bins that moved most (docs/drift.md)."""
        if gw.drift is None:
            return error_response(501, "This gateway keeps no drift sketches.",
                                  code="not_supported")
        report = await asyncio.to_thread(gw.drift.report, None, model)
        return JSONResponse(report.model_dump(mode="json"))

    def _engine(key: str | None) -> str:
        keys = list(gw.state.engines)
        if key is None and len(keys) == 1:
            return keys[0]
        if key not in keys:
            raise AdminDenied(404, f"No engine {key!r}; engines: {', '.join(keys) or 'none'}.")
        return key

    @router.get("/adapters")
    async def adapters() -> dict[str, Any]:
        """Adapters each engine has loaded."""
        return {k: sorted(e.adapters) for k, e in gw.state.engines.items()}

    @router.post("/adapters/load")
    async def load_adapter(body: LoadAdapterBody) -> Response:
        """Load an adapter by hand. Its path must lie inside the artifact store."""
        assert gw.supervisor is not None
        try:
            path = loadable(Path(body.path), gw.config.adapter_root)
        except AdapterPathError as e:
            code = "pickle_refused" if isinstance(e, AdapterRefused) else "path_outside_store"
            return error_response(400, f"{e} ({e.hint})", code=code, param="path")
        key = _engine(body.engine)
        try:
            await gw.supervisor.load_manual(key, body.name, path)
        except RuntimeError as e:
            return error_response(502, str(e), code="engine_error")
        return JSONResponse({"loaded": body.name, "engine": key})

    @router.post("/adapters/unload")
    async def unload_adapter(body: UnloadAdapterBody) -> Response:
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


def _fault_json(model: str, version: int, fault: Fault) -> dict[str, Any]:
    return {"model": model, "version": f"v{version}", "error_rate": fault.error_rate,
            "latency_ms": round(fault.latency_s * 1000)}
