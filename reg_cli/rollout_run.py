"""`reg rollout run`: the canary controller alone, apart from `reg serve`.

`reg serve` hosts the controller by default, judging from the gateway's own per-request
records. Run apart (`reg serve --no-controller` beside it, or several gateway replicas),
the controller reads what it needs from the outside:

1. metrics: Prometheus over its HTTP API (:class:`rollout.canary.prometheus.PrometheusSource`
   at ``$REG_PROMETHEUS_URL``), scraping the gateways' ``reg_gateway_routed_*`` series;
2. the identity check (:class:`serving.engines.identity.EngineIdentityCheck`): the
   deployments from the registry, the engines' status from the running gateway's admin
   API (``GET /admin/status`` at ``$REG_GATEWAY_URL``, with ``$REG_ADMIN_TOKEN``), and
   the probes asked of each engine at the URL the gateway reports (so it runs on the
   gateway's host);
3. a pass every ``--interval`` under the shared ``canary`` lease
   (:func:`rollout.controller.lease.hold_lease`), so only one controller acts at a time
   wherever the others run; :func:`rollout.controller.loop.watch` retries a failed pass
   after a backoff and records it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reg_cli._common import ArgumentError, open_registry, stop_on_signals
from reg_cli.output import JsonOpt, Output

if TYPE_CHECKING:
    import httpx

    from registry.api import Registry
    from registry.deployments import Deployment
    from rollout.canary.controller import CanaryController, PassOutcome
    from serving.engines.state import EngineStatus

GATEWAY_ENV = "REG_GATEWAY_URL"


class AdminStatusView:
    """What the identity check reads of a gateway running in another process: its engines'
    status (with each engine's generation, so the probes are asked again after every
    restart, as in-process) and the registry's deployments."""

    def __init__(self, registry: Registry, gateway_url: str, client: httpx.Client) -> None:
        from serving.source import RegistrySource

        self.source = RegistrySource(registry)
        self.gateway_url = gateway_url.rstrip("/")
        self.client = client

    def deployment(self, model: str, version: int) -> Deployment | None:
        return next((d for d in self.source.deployments()
                     if (d.model, d.version) == (model, version)), None)

    def engines(self) -> Mapping[str, EngineStatus]:
        import httpx

        from serving.engines.identity import IdentityUnavailable
        from serving.engines.process import EngineState
        from serving.engines.state import EngineStatus

        try:
            r = self.client.get(self.gateway_url + "/admin/status")
        except httpx.HTTPError as e:
            raise IdentityUnavailable(f"cannot reach the gateway at {self.gateway_url}: {e}",
                                      hint="start it with `reg serve`, or set REG_GATEWAY_URL"
                                      ) from e
        if r.status_code != 200:
            raise IdentityUnavailable(
                f"the gateway at {self.gateway_url} answered /admin/status with HTTP "
                f"{r.status_code}", hint="set REG_ADMIN_TOKEN to the token of `reg serve`")
        return {key: EngineStatus(
                    key=key, url=e["url"], state=EngineState(e["state"]), reason=e["reason"],
                    pid=e["pid"], adapters=frozenset(e["adapters"]), restarts=e["restarts"],
                    generation=e["generation"])
                for key, e in r.json()["engines"].items()}


def _seconds(text: str, flag: str) -> float:
    from recipes.core.durations import DURATION_HINT, duration_seconds

    seconds = duration_seconds(text)
    if seconds is None or seconds <= 0:
        raise ArgumentError(f"{flag} {text!r} is not a duration above 0",
                            hint=f"{DURATION_HINT}, e.g. {flag} 1s")
    return seconds


def _controller(reg: Registry, prometheus_url: str, gateway: httpx.Client,
                prometheus: httpx.Client) -> CanaryController:
    """The controller with Prometheus for metrics and the gateway's engines for identity."""
    from rollout.canary import stats
    from rollout.canary.controller import CanaryController
    from rollout.canary.prometheus import PrometheusSource
    from serving.config import ServeConfig
    from serving.engines.identity import EngineIdentityCheck

    stats.load_distributions()  # now, not inside the first verdict (as the hosted one does)
    from serving.source import RegistrySource

    cfg = ServeConfig.from_env()
    url = os.environ.get(GATEWAY_ENV, "").strip() or cfg.url
    view = AdminStatusView(reg, url, gateway)
    identity = EngineIdentityCheck(view, RegistrySource(reg), cfg.adapter_root)
    return CanaryController(reg, PrometheusSource(prometheus_url, prometheus), identity)


def _clients(timeout_s: float) -> tuple[httpx.Client, httpx.Client]:
    """A client for the gateway's admin API (with the admin token), one for Prometheus
    (without: the token is the gateway's, no other service's)."""
    import httpx

    from serving.config import ServeConfig

    token = ServeConfig.from_env().admin_token
    return (httpx.Client(timeout=timeout_s,
                         headers={"authorization": f"Bearer {token}"} if token else {}),
            httpx.Client(timeout=timeout_s))


def _leased(reg: Registry,
            controller: CanaryController) -> Callable[[], list[PassOutcome]]:
    from registry.lease import local_holder
    from rollout.canary.controller import LEASE_NAME
    from rollout.controller.lease import hold_lease

    holder = local_holder()

    def run_pass() -> list[PassOutcome]:
        with hold_lease(reg.leases, LEASE_NAME, holder):
            return controller.run_once()

    return run_pass


def outcome_json(o: PassOutcome) -> dict[str, Any]:
    return {"model": o.model, "rollout": o.rollout, "phase": o.phase.value, "reason": o.reason,
            "results": [{"name": r.name, "verdict": r.verdict.value, "value": r.value,
                         "limit": r.limit, "canary_n": r.canary_n, "baseline_n": r.baseline_n,
                         "p_value": r.p_value, "detail": r.detail} for r in o.results]}


def render_pass(out: Output, outcomes: Sequence[PassOutcome]) -> None:
    from rich.markup import escape

    for o in outcomes:
        if o.reason:
            out.message(f"{o.model} rollout {o.rollout}: [bold]{o.phase.value}[/bold] "
                        f"- {escape(o.reason)}")


def run(
    watch: Annotated[bool, typer.Option(
        "--watch", help="Run a pass every --interval until stopped (else one pass).")] = False,
    interval: Annotated[str, typer.Option(
        help="Time between passes with --watch, e.g. 1s or 500ms.")] = "1s",
    json_mode: JsonOpt = False,
) -> None:
    """Run the canary controller alone (not inside `reg serve`), under the shared lease.

    Metrics come from Prometheus ($REG_PROMETHEUS_URL); the identity check asks the engines
    of the gateway at $REG_GATEWAY_URL (admin token $REG_ADMIN_TOKEN).
    """
    from rollout.canary.prometheus import URL_ENV as PROMETHEUS_ENV  # httpx: only when run

    every = _seconds(interval, "--interval")
    url = os.environ.get(PROMETHEUS_ENV, "").strip()
    if not url:
        raise ArgumentError(
            f"`reg rollout run` reads the canary's metrics from Prometheus, and "
            f"${PROMETHEUS_ENV} is not set",
            hint=f"set {PROMETHEUS_ENV}=http://HOST:9090 (a Prometheus that scrapes the "
            "gateway's /metrics), or let `reg serve` host the controller: it reads the "
            "gateway's own records")
    out = Output(json_mode)
    gateway, prometheus = _clients(30.0)
    with open_registry() as reg, gateway, prometheus:
        run_pass = _leased(reg, _controller(reg, url, gateway, prometheus))
        if not watch:
            outcomes = run_pass()
            out.data([outcome_json(o) for o in outcomes])
            render_pass(out, outcomes)
            if not outcomes:
                out.message("No active rollout.")
            out.hint("`reg rollout run --watch` keeps going; `reg rollout status` shows one")
            return
        _watch(reg, run_pass, every, out)


def _watch(reg: Registry, run_pass: Callable[[], list[PassOutcome]], every: float,
           out: Output) -> None:
    from rollout.canary.controller import ACTOR
    from rollout.controller import loop

    stop = stop_on_signals(out.message)

    def on_pass(outcomes: list[PassOutcome] | None, err: BaseException | None) -> None:
        if outcomes is not None:
            render_pass(out, outcomes)
        elif err is not None:
            out.message(f"[yellow]standby:[/yellow] {err}")

    def record_error(e: BaseException) -> None:
        reg.record_event("rollout.pass_failed", actor=ACTOR,
                         message=f"canary pass failed: {type(e).__name__}: {e}")

    out.message(f"Canary controller: a pass every {every:g}s (Ctrl-C stops).")
    loop.watch(run_pass, stop, interval_s=every, on_pass=on_pass, record_error=record_error)
