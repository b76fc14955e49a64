"""`reg serve` (engines + gateway) and `reg traffic` (a model's traffic policy).

Thin: parse, call the library, render through ``Output``. uvicorn, aiohttp and
the gateway are imported inside `reg serve` only; vLLM is never imported here
(the engine is a separate process).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import typer

from recipes.core.errors import RegError
from reg_cli.output import JsonOpt, Output


def serve(
    host: Annotated[str, typer.Option(help="Gateway address. Engines always use loopback.")] = (
        "127.0.0.1"),
    port: Annotated[int, typer.Option(help="Gateway port.")] = 8000,
    max_concurrency: Annotated[int | None, typer.Option(
        help="Requests answered at once before 429 (default $REG_MAX_CONCURRENCY or 64).")] = None,
    max_loras: Annotated[int | None, typer.Option(
        help="Adapter slots per engine (default $REG_MAX_LORAS or 4).")] = None,
    replicas: Annotated[int | None, typer.Option(
        help="vLLM engines started per base model; each adapter is loaded on as many as its "
        "traffic needs, and the gateway picks one per request by adapter affinity and load "
        "(default $REG_REPLICAS or 1). A base listed in $REG_EXTERNAL_ENGINES uses the "
        "engines listed there instead.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    no_controller: Annotated[bool, typer.Option(
        "--no-controller", help="Do not host the canary controller (rollouts then advance "
        "only where `reg rollout run --watch` runs).")] = False,
) -> None:
    """Start an engine per base model with deployed versions, the OpenAI gateway, and the
    canary controller that advances rollouts (one across replicas, by a lease).

    Stops everything it started on Ctrl-C or SIGTERM; a restart resumes every rollout at
    its stored step.
    """
    import uvicorn

    from reg_cli._common import open_registry
    from serving.config import ServeConfig
    from serving.gateway.app import create_app
    from serving.source import RegistrySource

    overrides: dict[str, Any] = {"host": host, "port": port}
    if max_concurrency is not None:
        overrides["max_concurrency"] = max_concurrency
    if max_loras is not None:
        overrides["max_loras"] = max_loras
    if replicas is not None:
        overrides["replicas"] = replicas
    reg = open_registry(max_loras=max_loras, replicas=replicas)
    cfg = ServeConfig.from_env(
        **overrides,
        adapter_root=reg.settings.home / "serving" / "adapters",
        log_dir=reg.settings.home / "serving" / "logs",
    )
    source = RegistrySource(reg)
    app = create_app(source, cfg, writer=source, controller=None if no_controller else reg,
                     registry=reg, changes=reg.change_feed())
    out = Output()
    base = f"http://{host}:{port}"
    out.message(f"[bold]reg gateway[/bold] on {base}")
    out.message(f"  OpenAI base URL: {base}/v1   (models: {base}/v1/models)")
    out.message(f"  readiness: {base}/ready   metrics: {base}/metrics")
    out.message(f"  engine logs: {cfg.log_dir}")
    if cfg.replicas > 1:
        out.message(f"  {cfg.replicas} engine replicas per base model (local engines)")
    if not cfg.admin_token:
        out.message("  admin routes disabled (set REG_ADMIN_TOKEN to enable them)")
    out.message("  canary controller: " + ("off (--no-controller)" if no_controller else
                                           f"a pass every {cfg.controller_interval_s:g} s"))
    out.hint(f"curl {base}/ready  (engines take ~30-60 s to start on CPU); Ctrl-C stops all")
    _show_reg_logs(log_level)
    kw: dict[str, Any] = {}
    try:
        import httptools  # noqa: F401
        import uvloop  # noqa: F401

        kw = {"loop": "uvloop", "http": "httptools"}
    except ImportError:
        pass
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                    proxy_headers=False,
                    timeout_graceful_shutdown=10, **kw)
    finally:
        reg.close()


def _show_reg_logs(log_level: str) -> None:
    """The gateway's own news (engines ready or down, rollout decisions) beside uvicorn's,
    which configures only its own loggers."""
    import logging

    reg_log = logging.getLogger("reg")
    if not reg_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        reg_log.addHandler(handler)
    reg_log.setLevel(getattr(logging, log_level.upper(), logging.DEBUG))


class TrafficArgsError(RegError):
    """`reg traffic` arguments that cannot be read as a policy."""


def parse_assignments(items: Iterable[str], *, what: str = "weight") -> dict[str, int]:
    """Parse ``["production=90", "canary=10"]`` into ``{"production": 90, "canary": 10}``.

    Only the text: whether the numbers make a valid policy is the registry's to judge.
    """
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip().lstrip("-").isdigit():
            raise TrafficArgsError(f"cannot read {what} {item!r}",
                                   hint="write STAGE=PERCENT, e.g. production=90 canary=10")
        if name in out:
            raise TrafficArgsError(f"stage {name!r} is given twice", hint="name each stage once")
        out[name] = int(value)
    return out


def traffic(
    args: Annotated[list[str] | None, typer.Argument(
        metavar="[MODEL] [STAGE=PERCENT ...]",
        help="e.g. `production=90 canary=10`; none to show the current policy.")] = None,
    shadow: Annotated[list[str] | None, typer.Option(
        "--shadow", help="Mirror a share of production requests: STAGE=PERCENT.")] = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Kept in the audit log.")] = "",
    model: Annotated[str | None, typer.Option("--model", "-m", envvar="REG_MODEL",
                                              help="Model name.")] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Show or set a model's traffic split over its stages (recorded as an event)."""
    from reg_cli._common import open_registry
    from registry.traffic import Shadow, TrafficPolicy, default_policy
    from rollout.policy import stage_order

    out = Output(json_mode)
    items = list(args or [])
    if items and "=" not in items[0]:
        if model is not None and model != items[0]:
            raise TrafficArgsError(f"model named twice: {items[0]!r} and --model {model!r}")
        model = items.pop(0)
    weights = parse_assignments(items)
    shadows = parse_assignments(shadow or [], what="shadow")
    if len(shadows) > 1:
        raise TrafficArgsError("give one --shadow STAGE=PERCENT", hint="e.g. --shadow staging=5")
    mirror = next((Shadow(s, p) for s, p in shadows.items()), None)
    policy: TrafficPolicy | None
    with open_registry() as reg:
        name = reg.resolve_model(model)
        if weights:
            policy = reg.set_traffic(name, weights, mirror, reason=reason)
        elif mirror is not None:
            raise TrafficArgsError(
                "--shadow needs the weights too",
                hint=f"e.g. reg traffic {name} production=100 --shadow staging=5")
        else:
            policy = reg.get_traffic(name)
        stages = {s: v.number for s, v in reg.stage_map(name).items()}
    shown = policy or default_policy(name)
    current, sh = dict(shown.weights), shown.shadow
    out.data({"model": name, "weights": current,
              "shadow": {} if sh is None else {sh.stage: sh.percent}, "stages": stages,
              "default": policy is None})
    rows = [(s, f"{current[s]}%", f"v{stages[s]}" if s in stages else "-")
            for s in stage_order(current)]
    if sh is not None:
        rows.append((f"{sh.stage} (shadow)", f"{sh.percent}% of production",
                     f"v{stages[sh.stage]}" if sh.stage in stages else "-"))
    title = f"{name} traffic" + (" (default: no policy set)" if policy is None else "")
    out.table(title, ["stage", "share", "version"], rows)
    if weights:
        out.hint("the gateway applies it within a second; watch reg_gateway_requests_total")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `reg` app."""
    app.command()(serve)
    app.command()(traffic)
