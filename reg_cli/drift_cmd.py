"""`reg drift [MODEL]`: how far what each served version is asked moved from its training data.

Thin: the sketches live in the running gateway, so this asks its admin API
(``GET /admin/drift``, through :mod:`reg_cli.gateway_admin`) and renders the answer,
:class:`serving.gateway.drift.DriftReport` (docs/drift.md).
"""

from __future__ import annotations

from typing import Annotated

import typer

from reg_cli.gateway_admin import UrlOpt, admin_call
from reg_cli.output import JsonOpt, Output


def drift(
    model: Annotated[str | None, typer.Argument(
        help="A model; none shows every deployed version.")] = None,
    url: UrlOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Compare the prompts each deployed version was asked in the last hour with its training
    prompts: samples, PSI per feature (prompt length, tokens), the verdict and the bins that
    moved most."""
    from serving.gateway.drift import DriftReport, VersionDrift

    out = Output(json_mode)
    body = admin_call("GET", "/admin/drift", url=url,
                      params={"model": model} if model else None)
    report = DriftReport.model_validate(body)
    out.data(report.model_dump(mode="json"))

    def psi(v: VersionDrift, feature: str) -> str:
        f = next((f for f in v.features if f.feature == feature), None)
        return "" if f is None else f"{f.psi:.3f}"

    def moved(v: VersionDrift) -> str:
        if not v.reference:
            return v.note
        return "; ".join(f"{f.feature} {b.bin}: {b.expected:.0%} -> {b.actual:.0%}"
                         for f in v.features if f.verdict != "stable" for b in f.moved[:2])

    minutes = report.window_s // 60
    out.table(f"Prompt drift against the training data (last {minutes} min, PSI: < 0.1 "
              "stable, 0.1-0.25 moderate, > 0.25 significant)",
              ["model", "version", "stages", "samples", "length PSI", "tokens PSI",
               "verdict", "moved most"],
              [(v.model, f"v{v.version}", ",".join(v.stages), v.samples, psi(v, "length"),
                psi(v, "tokens"), v.verdict, moved(v)) for v in report.versions])
    dropped = sum(report.dropped.values())
    if dropped:
        out.message(f"{dropped} prompt(s) left out: " + ", ".join(
            f"{k} {n}" for k, n in sorted(report.dropped.items()) if n))
    if not report.versions:
        out.message("No version is deployed" + (f" for {model}" if model else "") + ".")
        out.hint("reg promote MODEL VERSION production")
    elif any(v.verdict == "significant" for v in report.versions):
        out.hint("add prompts like the ones that moved to the recipe's data, then "
                 "`reg reconcile` trains and registers a version on them")
    elif any(v.verdict == "too few samples" or v.verdict == "no samples"
             for v in report.versions):
        out.hint(f"a verdict needs {report.min_samples} prompts in the window; "
                 "send traffic through the gateway")


def register(app: typer.Typer) -> None:
    """Add `reg drift` to the `reg` app."""
    app.command()(drift)
