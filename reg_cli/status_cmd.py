"""`reg status`: the registry and the running gateway at a glance, for people and scripts.

Thin: read :meth:`registry.api.Registry.overview` here, ask the gateway at
``$REG_GATEWAY_URL`` (else where `reg serve` listens by default) for the live part of
its ``/api/status``, and render both. The document is the gateway's own
(:class:`serving.gateway.status.GatewayStatus`), so `reg status --json` and
``/api/status`` have one shape. A gateway that cannot be reached is one line of the
output, not an error: the registry part is still shown.

``--watch`` redraws in place (rich Live) every ``--interval`` until Ctrl-C or SIGTERM,
then exits 0; with ``--json`` it prints one compact document per line instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from reg_cli._common import ArgumentError, ModelOpt, open_registry, stop_on_signals, ts, vref
from reg_cli.output import JsonOpt, Output, console

if TYPE_CHECKING:
    import httpx
    from rich.console import RenderableType

    from registry.api import Registry
    from registry.api.overview import ModelOverview, RolloutOverview
    from serving.gateway.status import GatewayLive, GatewayStatus, VersionLive

GATEWAY_ENV = "REG_GATEWAY_URL"
KEYS_ENV = "REG_API_KEYS"
VERSIONS_SHOWN = 10  # per model: the newest, plus every staged one
EVENTS_SHOWN = 8

_PHASE_STYLE = {"succeeded": "green", "rolled_back": "red", "aborted": "yellow",
                "paused": "yellow", "awaiting_approval": "cyan", "progressing": "cyan",
                "verifying": "cyan", "pending": "dim"}
_VERDICT_STYLE = {"Successful": "green", "Failed": "red", "Inconclusive": "yellow",
                  "passed": "green", "failed": "red", "waiting": "cyan",
                  "inconclusive": "yellow"}


# ---- gathering ------------------------------------------------------------------------------


def gateway_url() -> str:
    """``$REG_GATEWAY_URL``, else where `reg serve` listens by default."""
    from serving.config import ServeConfig

    return (os.environ.get(GATEWAY_ENV, "").strip() or ServeConfig.from_env().url).rstrip("/")


def fetch_live(client: httpx.Client, url: str, model: str | None
               ) -> tuple[GatewayLive | None, str]:
    """The gateway's live part (only ``model``'s when given), or None and why not."""
    import httpx
    from pydantic import ValidationError

    from serving.gateway.status import GatewayStatus

    keys = [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    headers = {"authorization": f"Bearer {keys[0]}"} if keys else {}
    try:
        r = client.get(url + "/api/status", headers=headers)
    except httpx.HTTPError as e:
        return None, (f"no gateway reachable at {url} ({type(e).__name__}); showing the "
                      f"registry only (start one with `reg serve`, or set {GATEWAY_ENV})")
    if r.status_code != 200:
        why = f"HTTP {r.status_code}"
        if r.status_code == 401:
            why += f": it needs an API key (set {KEYS_ENV} to one of the gateway's keys)"
        return None, f"the gateway at {url} refused /api/status ({why}); showing the registry only"
    try:
        live = GatewayStatus.model_validate(r.json()).gateway
    except (ValueError, ValidationError) as e:
        return None, (f"the gateway at {url} answered /api/status with a document this reg "
                      f"does not read ({type(e).__name__}); is it another version of reg?")
    if live is None:
        return None, f"the gateway at {url} sent no live part"
    return (live if model is None else only_model(live, model)), ""


def only_model(live: GatewayLive, model: str) -> GatewayLive:
    """``live`` with the versions, routing, degraded deployments and series of ``model``."""
    series = live.series.model_copy(update={
        "versions": [s for s in live.series.versions if s.model == model]})
    return live.model_copy(update={
        "versions": [v for v in live.versions if v.model == model],
        "routing": {m: r for m, r in live.routing.items() if m == model},
        "degraded": [d for d in live.degraded if d.model == model],
        "series": series})


def gather(reg: Registry, model: str | None, client: httpx.Client, url: str) -> GatewayStatus:
    """The registry's overview (of ``model`` when given) and the gateway's live part."""
    from serving.gateway.status import GatewayStatus, verdicts_of

    overview = reg.overview(model, versions=VERSIONS_SHOWN, events=EVENTS_SHOWN)
    live, note = fetch_live(client, url, model)
    now = datetime.now(UTC)
    return GatewayStatus(generated_at=now, registry=overview, verdicts=verdicts_of(overview, now),
                         gateway=live, gateway_note=note)


# ---- rendering --------------------------------------------------------------------------------


def _num(value: float | None, fmt: str = ".3g") -> str:
    return "-" if value is None else format(value, fmt)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _rollout_lines(r: RolloutOverview, verdict: str | None) -> list[str]:
    from rich.markup import escape

    style = _PHASE_STYLE.get(r.phase, "")
    steps = len(r.steps) or "?"
    head = (f"rollout {r.id}: {vref(r.candidate)} against {vref(r.baseline)} "
            f"[{style}]{r.phase}[/{style}], step {r.step + 1}/{steps} at {r.weight}% canary"
            f", failures {r.failures}" + (f"/{r.failure_limit}" if r.failure_limit else ""))
    if verdict:
        head += f", step verdict [{_VERDICT_STYLE.get(verdict, '')}]{verdict}[/]"
    lines = [head]
    if not r.active:
        lines.append(f"  ended {ts(r.ended_at)}")
    if r.reason:
        lines.append(f"  why: {escape(r.reason)}")
    return lines


def _checks_table(r: RolloutOverview) -> RenderableType:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="  last analysis", title_justify="left", box=None, padding=(0, 2))
    for column in ("check", "verdict", "value", "limit", "canary n", "baseline n",
                   "confidence", "detail"):
        t.add_column(column)
    for c in r.analysis:
        style = _VERDICT_STYLE.get(c.verdict, "")
        t.add_row(c.name, f"[{style}]{c.verdict}[/{style}]", _num(c.value, ".4g"),
                  _num(c.limit, "g"), str(c.canary_n), str(c.baseline_n),
                  _percent(c.confidence), escape(c.detail))
    return t


def _versions_table(m: ModelOverview, live: dict[int, VersionLive],
                    weights: dict[str, int]) -> RenderableType:
    from rich.table import Table

    t = Table(title=None, box=None, padding=(0, 2), header_style="bold")
    for c in ("version", "stages", "traffic", "status", "created", "git", "metric",
              "gates", "req (5m)", "err (5m)", "req/s", "p95", "served"):
        t.add_column(c)
    for v in m.versions:
        share = sum(weights.get(s, 0) for s in v.stages)
        metric = next(iter(v.metrics.items()), None)
        lv = live.get(v.number)
        recent = None if lv is None else lv.recent
        gates = "-" if v.gates_passed is None else ("passed" if v.gates_passed else
                                                     "[red]failed[/red]")
        t.add_row(
            f"[bold]{vref(v.number)}[/bold]", ", ".join(v.stages) or "-",
            f"{share}%" if v.stages else "-", v.status, ts(v.created_at),
            (v.git_commit or "-")[:8], "-" if metric is None else f"{metric[0]} {metric[1]:.4g}",
            gates, "-" if recent is None else str(recent.requests),
            "-" if recent is None else _errors(recent.errors, recent.error_rate),
            "-" if recent is None else f"{recent.rate:.2f}",
            "-" if recent is None else _ms(recent.latency_p95_s),
            "-" if lv is None else f"{lv.totals.total} ({lv.totals.errors} 5xx)")
    return t


def _errors(n: int, rate: float | None) -> str:
    text = f"{n} ({_percent(rate)})" if rate is not None else str(n)
    return f"[red]{text}[/red]" if n else text


def _model_view(m: ModelOverview, doc: GatewayStatus) -> list[RenderableType]:
    from rich.markup import escape
    from rich.text import Text

    traffic = " ".join(f"{s}={w}" for s, w in m.traffic.weights.items())
    if m.traffic.shadow:
        traffic += " " + " ".join(f"shadow {s}={p}" for s, p in m.traffic.shadow.items())
    stages = ", ".join(f"{s} -> {vref(v)}" for s, v in m.stages.items()) or "no stages"
    parts: list[RenderableType] = [Text.from_markup(
        f"[bold]{escape(m.name)}[/bold]  {stages}  ·  traffic {traffic}"
        + (" (default)" if m.traffic.default else "")
        + f"  ·  {m.versions_total} version(s), showing {len(m.versions)}")]
    live = {v.version: v for v in (doc.gateway.versions if doc.gateway else [])
            if v.model == m.name}
    parts.append(_versions_table(m, live, m.traffic.weights))
    if m.rollout is not None:
        parts.extend(Text.from_markup(line)
                     for line in _rollout_lines(m.rollout, doc.verdicts.get(m.name)))
        if m.rollout.analysis:
            parts.append(_checks_table(m.rollout))
    if m.last_reconcile is not None:
        e = m.last_reconcile
        parts.append(Text(f"last reconcile: {e.kind} at {ts(e.at)}: {e.message}"))
    if m.runs:
        parts.append(Text("runs: " + "; ".join(
            f"#{r.id} {r.status}" + (f" -> {vref(r.version)}" if r.version else "")
            + f" ({ts(r.created_at)})" for r in m.runs[:3])))
    return parts


def _gateway_view(doc: GatewayStatus, url: str) -> list[RenderableType]:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    g = doc.gateway
    if g is None:
        return [Text(doc.gateway_note, style="yellow")]
    state = "[green]ready[/green]" if g.ready else "[red]not ready[/red]"
    parts: list[RenderableType] = [Text.from_markup(
        f"[bold]gateway[/bold] {escape(url)}: {state}, {g.in_flight} in flight "
        f"(max {g.max_concurrency}), routing marker {g.marker}, up since {ts(g.started_at)}")]
    t = Table(box=None, padding=(0, 2), header_style="bold")
    for c in ("engine", "state", "adapters", "restarts", "reason"):
        t.add_column(c)
    for e in g.engines:
        style = "green" if e.ready else "red"
        t.add_row(e.name or e.key, f"[{style}]{e.state}[/{style}]",
                  f"{len(e.adapters)}/{e.adapter_slots or '?'}", str(e.restarts),
                  escape(e.reason))
    parts.append(t if g.engines else Text("no engine yet", style="dim"))
    # The registry's stages where the gateway has not routed the version yet.
    staged = {(m.name, v.number): v.stages for m in (doc.registry.models if doc.registry else [])
              for v in m.versions}
    for d in g.degraded:
        stages = d.stages or staged.get((d.model, d.version), [])
        parts.append(Text.from_markup(
            f"[red]degraded[/red] {escape(d.model)}@v{d.version} ({', '.join(stages) or '-'})"
            f": {escape(d.reason)}"))
    if g.last_error:
        parts.append(Text(f"last supervisor error: {g.last_error}", style="dim"))
    return parts


def status_view(doc: GatewayStatus, url: str) -> RenderableType:
    """The whole summary as one rich renderable: what `--watch` redraws in place."""
    from rich.console import Group
    from rich.rule import Rule
    from rich.text import Text

    parts: list[RenderableType] = []
    ov = doc.registry
    if ov is not None:
        if not ov.models:
            parts.append(Text("the registry has no models yet", style="dim"))
        for m in ov.models:
            parts.extend(_model_view(m, doc))
            parts.append(Rule(style="dim"))
        if ov.last_reconcile is not None:
            e = ov.last_reconcile
            parts.append(Text(f"last reconcile (any model): {e.kind} at {ts(e.at)}: "
                              f"{e.message}"))
    parts.extend(_gateway_view(doc, url))
    parts.append(Text(f"as of {ts(doc.generated_at)}", style="dim"))
    return Group(*parts)


def _events_rows(doc: GatewayStatus) -> Iterable[tuple[object, ...]]:
    for e in [] if doc.registry is None else doc.registry.events:
        yield (e.id, ts(e.at), e.kind, e.model or "", e.actor, e.message)


# ---- the command -----------------------------------------------------------------------------


def status(
    model_arg: Annotated[str | None, typer.Argument(
        metavar="[MODEL]", help="Only this model (default: every model).")] = None,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Redraw in place every --interval until Ctrl-C (with --json: one "
        "document per line).")] = False,
    interval: Annotated[float, typer.Option(
        help="Seconds between redraws with --watch.")] = 2.0,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Per model: stages, versions, traffic, the rollout and its analysis, the last
    reconcile and runs; and the running gateway's engines, degraded versions and requests
    and errors per version over the last minutes."""
    import httpx
    from pydantic_core import to_json

    if model_arg and model and model_arg != model:
        raise ArgumentError(f"model named twice: {model_arg!r} and --model {model!r}")
    if interval <= 0:
        raise ArgumentError(f"--interval {interval:g} must be above 0",
                            hint="e.g. --interval 2")
    out = Output(json_mode)
    url = gateway_url()
    # From here on Ctrl-C and SIGTERM end the watch after its pass, exiting 0.
    stop = stop_on_signals(lambda _message: None) if watch else threading.Event()
    with open_registry() as reg, httpx.Client(timeout=3.0) as client:
        name = None if not (model_arg or model) else reg.resolve_model(model_arg or model)

        def read() -> GatewayStatus:
            return gather(reg, name, client, url)

        if not watch:
            doc = read()
            out.data(doc.model_dump(mode="json"))
            if not json_mode:
                console.print(status_view(doc, url))
                out.table("Recent events", ["#", "time", "kind", "model", "actor", "message"],
                          _events_rows(doc))
                out.hint("`reg status --watch` follows it; `reg events` has the whole log")
            return
        if json_mode:
            _watch(read, interval, stop, lambda doc: print(
                to_json(doc.model_dump(mode="json")).decode(), flush=True))
        else:
            _watch_live(read, interval, stop, url)


def _watch(read: Callable[[], GatewayStatus], interval: float, stop: threading.Event,
           show: Callable[[GatewayStatus], object]) -> None:
    while True:
        show(read())
        if stop.wait(interval):
            return


def _watch_live(read: Callable[[], GatewayStatus], interval: float, stop: threading.Event,
                url: str) -> None:
    from rich.live import Live

    with Live(status_view(read(), url), console=console, refresh_per_second=4,
              transient=False, auto_refresh=False) as live:
        while not stop.wait(interval):
            live.update(status_view(read(), url), refresh=True)


def register(app: typer.Typer) -> None:
    app.command()(status)
