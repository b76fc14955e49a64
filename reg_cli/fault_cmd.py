"""`reg fault`: make a version fail or slow on purpose (game days), through the gateway.

Thin: parse, ask the running gateway's admin API (``/admin/faults``, through
:mod:`reg_cli.gateway_admin`), render. The gateway records each change as an audit event.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from reg_cli._common import ModelOpt, ReasonOpt, split_args
from reg_cli.gateway_admin import GatewayError, UrlOpt, admin_call
from reg_cli.output import JsonOpt, Output

_NOT_FOUND = "`reg fault` lists the faults injected now; `reg versions` the versions"


def _call(method: str, path: str, *, url: str | None, json: Any = None,
          params: dict[str, str] | None = None) -> dict[str, Any]:
    return admin_call(method, path, url=url, json=json, params=params,
                      not_found_hint=_NOT_FOUND)


def fault(
    args: Annotated[list[str] | None, typer.Argument(
        metavar="[clear] [MODEL] VERSION",
        help="e.g. `v3 --error-rate 0.2`, `clear v3`; none lists the faults injected now.")
    ] = None,
    error_rate: Annotated[float, typer.Option(
        "--error-rate", min=0.0, max=1.0,
        help="Share of the version's requests answered 500 (0-1).")] = 0.0,
    latency_ms: Annotated[int, typer.Option(
        "--latency-ms", min=0, help="Delay added to each of the version's requests.")] = 0,
    reason: ReasonOpt = "",
    model: ModelOpt = None,
    url: UrlOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Inject a fault into a version for a game day (admin), or clear it: the running
    gateway fails or delays that version's requests; each change is an audit event."""
    from reg_cli._common import open_registry
    from registry.settings import default_actor

    out = Output(json_mode)
    items = list(args or [])
    if not items:
        listed = _call("GET", "/admin/faults", url=url)["faults"]
        out.data(listed)
        out.table("Injected faults", ["model", "version", "error rate", "latency"],
                  [(f["model"], f["version"], f"{f['error_rate']:.0%}", f"{f['latency_ms']} ms")
                   for f in listed])
        if not listed:
            out.hint("reg fault VERSION --error-rate 0.2 (or --latency-ms 200) starts one")
        return
    clear = items[0] == "clear"
    name, (ref,) = split_args(items[1:] if clear else items, ["VERSION"], model)
    with open_registry() as reg:
        v = reg.resolve(name, ref)  # names what exists when the version does not
    path = f"/admin/faults/{v.model}/v{v.number}"
    if clear:
        if error_rate or latency_ms:
            raise GatewayError("`reg fault clear` takes no --error-rate or --latency-ms",
                               hint=f"reg fault clear {v.model} v{v.number}")
        gone = _call("DELETE", path, url=url,
                     params={"reason": reason, "actor": default_actor()})["cleared"]
        out.data(gone)
        out.message(f"{v.model} v{v.number}: fault cleared ({_describe(gone)} no more)")
        out.hint(f"reg history {v.model}")
        return
    if not error_rate and not latency_ms:
        raise GatewayError("nothing to inject",
                           hint=f"e.g. reg fault {v.model} v{v.number} --error-rate 0.2 "
                           "(or --latency-ms 200)")
    body = {"error_rate": error_rate, "latency_ms": latency_ms, "reason": reason,
            "actor": default_actor()}
    set_ = _call("PUT", path, url=url, json=body)["fault"]
    out.data(set_)
    out.message(f"{v.model} v{v.number}: injecting {_describe(set_)} into its requests")
    out.hint(f"reg rollout status {v.model} --watch; `reg fault clear {v.model} v{v.number}` "
             "ends it")


def _describe(f: dict[str, Any]) -> str:
    from serving.gateway.faults import Fault

    return Fault(float(f["error_rate"]), int(f["latency_ms"]) / 1000).describe()


def register(app: typer.Typer) -> None:
    """Add `reg fault` to the `reg` app."""
    app.command()(fault)
