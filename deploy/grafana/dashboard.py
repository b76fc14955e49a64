"""The reg Grafana dashboard, built from code with grafana-foundation-sdk.

``python -m deploy.grafana.dashboard`` (``make dashboards``) writes
``deploy/grafana/reg-dashboard.json``, which is committed; tests/deploy/test_dashboard.py
regenerates it and fails on drift, and tests/serving/test_dashboard_live.py runs every
panel's query against a real Prometheus scraping a real gateway.

The dashboard reads only what a gateway exports on ``/metrics`` (docs/metrics.md), no
recording rule, so it works with the example scrape config alone. Two template
variables: ``datasource`` (any Prometheus) and ``model`` (one, several or all).
Registry-derived series (``reg_rollout_*``, ``reg_reconcile_*``, ``reg_training_runs``)
are the same on every gateway replica, so panels take their ``max``, never their sum;
request series are per replica, so panels sum them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models.common import StackingMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from deploy import generated

OUT = Path(__file__).with_name("reg-dashboard.json")
UID = "reg-overview"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
M = 'model=~"$model"'
RATE = "$__rate_interval"
RANGE = "$__range"


def q(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    """One query; :func:`with_targets` gives it its refId within its panel."""
    query = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        query = query.legend_format(legend)
    return query.instant() if instant else query.range()


class _Targets(Protocol):
    """What every panel builder of grafana_foundation_sdk.builders.<panel> has."""

    def with_target(self, targets: Builder[Dataquery], /) -> Self: ...


P = TypeVar("P", bound=_Targets)


def with_targets(panel: P, queries: Sequence[prometheus.Dataquery]) -> P:
    """Add the queries, named A, B, ... as Grafana names them (the builders leave refId empty)."""
    for i, query in enumerate(queries):
        panel = panel.with_target(query.ref_id(chr(ord("A") + i)))
    return panel


def series(title: str, description: str, unit: str, *queries: prometheus.Dataquery,
           span: int = 12, stacked: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).height(8).span(span).fill_opacity(10).line_width(1))
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(60)
    return with_targets(panel, queries)


def stats(title: str, description: str, unit: str, *queries: prometheus.Dataquery,
          span: int = 6) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).height(5).span(span))
    return with_targets(panel, queries)


def rate(metric: str, by: str, selector: str = M) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RATE}]))"


def quantile(qv: float, metric: str) -> str:
    return (f"histogram_quantile({qv}, sum by (le, model, version) "
            f"(rate({metric}_bucket{{{M}}}[{RATE}])))")


def traffic() -> list[Any]:
    requests = rate("reg_gateway_requests_total", "model, version, stage")
    errors = rate("reg_gateway_requests_total", "model, version, stage", M + ', code=~"5.."')
    # No 5xx yet is an error rate of 0, not a gap: fill the numerator with 0 per series.
    error_rate = f"({errors} or {requests} * 0) / {requests}"
    return [
        dash.Row("Requests"),
        series("Requests per second", "Requests the gateway answered, by the version that "
               "served them and its stage.", "reqps",
               q(requests, "{{model}} {{version}} ({{stage}})")),
        series("Error rate (5xx)", "Share of answered requests with a 5xx status, by served "
               "version and stage.", "percentunit",
               q(error_rate, "{{model}} {{version}} ({{stage}})")),
        series("Latency p50 / p95 / p99", "Request received to last byte sent, per version.",
               "s", *(q(quantile(v, "reg_gateway_request_duration_seconds"),
                        f"p{int(v * 100)} {{{{model}}}} {{{{version}}}}")
                      for v in (0.5, 0.95, 0.99)), span=8),
        series("Time to first token p50 / p95", "To the first generated token (streams) or "
               "the whole answer, per version.", "s",
               *(q(quantile(v, "reg_gateway_time_to_first_token_seconds"),
                   f"p{int(v * 100)} {{{{model}}}} {{{{version}}}}") for v in (0.5, 0.95)),
               span=8),
        series("Output tokens per second", "Generated tokens of answered requests per "
               "version, and their prompt tokens (legend 'prompt').", "short",
               q(rate("reg_gateway_output_tokens_total", "model, version"),
                 "{{model}} {{version}}"),
               q(rate("reg_gateway_prompt_tokens_total", "model, version"),
                 "prompt {{model}} {{version}}"), span=8),
        series("In flight", "Requests being answered now, per version.", "short",
               q(f"sum by (model, version) (reg_gateway_in_flight_requests{{{M}}})",
                 "{{model}} {{version}}"), span=8),
        series("Refused before routing", "Requests refused before routing, by reason and "
               "status (429: over REG_MAX_CONCURRENCY; 404: unknown model; 401: auth).",
               "reqps", q(f"sum by (reason, code) (rate(reg_gateway_rejected_requests_total"
                          f"[{RATE}]))", "{{reason}} {{code}}"), span=8),
        series("Traffic weights", "Share of each model's traffic per stage (the traffic "
               "policy the gateway routes by), with the stage's version.", "percentunit",
               q(f"max by (model, version, stage) (reg_traffic_weight_ratio{{{M}}})",
                 "{{model}} {{stage}} {{version}}"), span=8, stacked=True),
    ]


def rollouts() -> list[Any]:
    rl = "model, version"
    chosen = rate("reg_gateway_routed_requests_total", rl)
    failed = rate("reg_gateway_routed_requests_total", rl, M + ', outcome!="ok"')
    return [
        dash.Row("Rollouts"),
        with_targets(statetimeline.Panel().title("Rollout phase").description(
            "The phase of each model's newest rollout (pending, verifying, progressing, "
            "paused, awaiting_approval, then succeeded, rolled_back or aborted).")
            .datasource(DATASOURCE).height(5).span(12), [
                q(f"max by (model, version, phase) (reg_rollout_phase{{{M}}}) == 1",
                  "{{model}} {{version}}: {{phase}}")]),
        stats("Step and canary weight", "The rollout's current step (from 1) of its plan's "
              "steps, and the canary's traffic share it set.", "short",
              q(f"max by ({rl}) (reg_rollout_step{{{M}}})", "step {{model}} {{version}}",
                instant=True),
              q(f"max by ({rl}) (reg_rollout_steps{{{M}}})", "of {{model}} {{version}}",
                instant=True),
              q(f"max by ({rl}) (reg_rollout_canary_weight_ratio{{{M}}}) * 100",
                "weight % {{model}} {{version}}", instant=True), span=12),
        with_targets(table.Panel().title("Last analysis").description(
            "Each check of the rollout's last analysis: the candidate's value (error rate, or "
            "p95 ratio over the baseline), its limit, the always-valid p-value of the "
            "failure test, the samples per side and the verdict.")
            .datasource(DATASOURCE).height(8).span(12), [
                q(f"max by ({rl}, check) (reg_rollout_analysis_value{{{M}}})", "value",
                  instant=True),
                q(f"max by ({rl}, check) (reg_rollout_analysis_limit{{{M}}})", "limit",
                  instant=True),
                q(f"max by ({rl}, check) (reg_rollout_analysis_p_value{{{M}}})", "p-value",
                  instant=True),
                q(f"max by ({rl}, check, side) (reg_rollout_analysis_samples{{{M}}})",
                  "samples {{side}}", instant=True),
                q(f"max by ({rl}, check, verdict) (reg_rollout_analysis_verdict{{{M}}}) == 1",
                  "{{verdict}}", instant=True)]),
        series("Candidate vs stable: error rate", "Errors (5xx, and failures production "
               "answered in their place) of the requests routing chose each version for: "
               "what the rollout analysis judges.", "percentunit",
               q(f"{failed} / {chosen}", "{{model}} {{version}}")),
        stats("Rollouts ended", "Rollouts that ended in the selected time range, by outcome "
              "(a rolled-back canary also raises the RegCanaryRolledBack alert).", "short",
              q(f"max by (model, outcome) (increase(reg_rollouts_finished_total{{{M}}}"
                f"[{RANGE}]))", "{{model}} {{outcome}}", instant=True)),
        stats("Failed analyses", "Failed analyses of the newest rollout so far (it rolls back "
              "at its failure limit).", "short",
              q(f"max by ({rl}) (reg_rollout_failures{{{M}}})", "{{model}} {{version}}",
                instant=True)),
    ]


def engines() -> list[Any]:
    return [
        dash.Row("Engines and deployments"),
        stats("Engine up", "1 when the vLLM engine answers its health check.", "short",
              q("max by (engine) (reg_engine_up)", "{{engine}}", instant=True)),
        series("Engine restarts", "Restarts by the supervisor in each interval.", "short",
               q(f"sum by (engine) (increase(reg_engine_restarts_total[{RATE}]))",
                 "{{engine}}"), span=6),
        series("Adapters loaded vs slots", "LoRA adapters loaded per engine against its "
               "slots (--max-loras): a version beyond them is refused unless forced.",
               "short", q("max by (engine) (reg_engine_adapters_loaded)", "loaded {{engine}}"),
               q("max by (engine) (reg_engine_adapter_slots)", "slots {{engine}}"), span=6),
        stats("Deployed versions servable", "1 per deployed version that can be served, 0 "
              "when it is degraded (its adapter failed to fetch or load).", "short",
              q(f"min by (model, version, stage) (reg_deployment_servable{{{M}}})",
                "{{model}} {{version}} ({{stage}})", instant=True)),
        series("Prompt drift (PSI)", "Population stability index of the prompts each "
               "version was asked in the last hour against its training prompts, by feature "
               "(docs/drift.md): below 0.1 stable, 0.1-0.25 moderate, above 0.25 "
               "significant. Noisy below 100 prompts (reg_drift_samples).", "short",
               q(f"max by (model, version, feature) (reg_drift_psi{{{M}}})",
                 "{{model}} {{version}} {{feature}}")),
    ]


def reconcile() -> list[Any]:
    failures = 'kind=~"reconcile\\\\.(failed|pass_failed|deploy_failed)"'
    return [
        dash.Row("Reconcile and training"),
        series("Reconcile events", "What the reconciler recorded in each interval, by kind "
               "(runs started, versions registered, deployments...).", "short",
               q(f"max by (kind) (increase(reg_reconcile_events_total[{RATE}]))", "{{kind}}"),
               span=8),
        stats("Reconcile failures", "Failed training runs, passes and deployments in the "
              "selected time range.", "short",
              q(f"max by (kind) (increase(reg_reconcile_events_total{{{failures}}}"
                f"[{RANGE}]))", "{{kind}}", instant=True), span=8),
        stats("Training runs", "Training runs in the registry, by model and status.", "short",
              q(f"max by (model, status) (reg_training_runs{{{M}}}) > 0",
                "{{model}} {{status}}", instant=True), span=8),
    ]


def variables() -> list[Any]:
    return [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        dash.QueryVariable("model").label("Model").datasource(DATASOURCE)
        .query("label_values(reg_traffic_weight_ratio, model)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True).include_all(True).all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all")),
    ]


def build() -> dash.Dashboard:
    board = (dash.Dashboard("reg: models, rollouts, engines").uid(UID)
             .tags(["reg", "llm", "serving"]).refresh("10s").time("now-1h", "now")
             .timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR)
             .description("Requests, latency and tokens per model version and stage, the "
                          "traffic policy, rollouts with their analysis, engines, reconcile "
                          "and training. Generated by deploy/grafana/dashboard.py."))
    for variable in variables():
        board = board.with_variable(variable)
    items = [*traffic(), *rollouts(), *engines(), *reconcile()]
    for n, item in enumerate(items, start=1):
        if isinstance(item, dash.Row):
            board = board.with_row(item.id(n))
            continue
        board = board.with_panel(item.id(n))
    return board


def render() -> str:
    """The dashboard's JSON, as committed (sorted keys, two-space indent, final newline)."""
    data = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def targets(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (panel title, PromQL) of a rendered dashboard."""
    out: list[tuple[str, str]] = []
    for panel in data.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for t in inner.get("targets", []):
                out.append((str(inner.get("title")), str(t["expr"])))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    return generated.main(
        argv, description=__doc__.splitlines()[0], default_out=OUT, render=render,
        summary=lambda text: f"{len(targets(json.loads(text)))} queries")


if __name__ == "__main__":
    raise SystemExit(main())
