"""Versions: register, list, show, compare and archive them.

The metrics shown are the evaluation report training wrote (metrics.json), read
through :class:`recipes.evaluation.report.EvaluationReport`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reg_cli._common import (
    ModelOpt,
    ReasonOpt,
    open_registry,
    split_args,
    ts,
    version_json,
    vref,
)
from reg_cli.output import JsonOpt, Output
from registry.versions import VersionStatus

if TYPE_CHECKING:
    from recipes.evaluation.human.results import HumanEvalResult
    from recipes.evaluation.report import EvaluationReport
    from registry.tables import VersionPublic


def _report(metrics: dict[str, Any]) -> EvaluationReport | None:
    """The stored metrics as a report; None for a value this code cannot read (shown blank,
    never failing a listing)."""
    from recipes.evaluation.report import EvaluationReport, ReportError

    try:
        return EvaluationReport.parse(metrics)
    except ReportError:
        return None


def _loss(metrics: dict[str, Any]) -> str:
    """The tuned model's held-out loss with the base model's beside it."""
    from recipes.evaluation.report import held_out_loss

    held = held_out_loss(metrics)
    if held is None:
        return ""
    return f"{held.tuned:.4g}" + ("" if held.base is None else f" ({held.base:.4g})")


def register_cmd(
    artifact_dir: Annotated[Path, typer.Argument(help="A training artifact directory.")],
    run_id: Annotated[int | None, typer.Option(help="Training run id, for lineage.")] = None,
    git_commit: Annotated[str | None, typer.Option(help="Git commit of the recipe.")] = None,
    recipe_path: Annotated[str | None, typer.Option(help="Recipe file, for lineage.")] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Register a training artifact as the next version of its model (idempotent)."""
    from rich.markup import escape

    from recipes.training.tracking.client import tag_registered

    out = Output(json_mode)
    with open_registry() as reg:
        res = reg.register(artifact_dir, run_id=run_id, git_commit=git_commit,
                           recipe_path=recipe_path)
    v = res.version
    warning = tag_registered(artifact_dir, model=v.model, number=v.number,
                             digest=v.artifact_digest, status=str(v.status))
    out.data({"created": res.created, "version": version_json(v), "tracking_warning": warning})
    if warning is not None:
        out.message(f"[yellow]warning:[/yellow] {escape(warning)}")
    if res.created:
        out.message(f"[green]Registered {v.ref}[/green] ({v.status}, artifact "
                    f"{(v.artifact_digest or '')[:19]})")
    else:
        out.message(f"{v.ref} already holds this spec hash ({v.status}); nothing registered.")
    out.hint(f"reg promote {v.model} v{v.number} staging")


def versions(
    model_arg: Annotated[str | None, typer.Argument(metavar="[MODEL]")] = None,
    status: Annotated[VersionStatus | None, typer.Option(
        help="Only versions in this status.")] = None,
    limit: Annotated[int, typer.Option(help="Show the newest N.")] = 50,
    all_: Annotated[bool, typer.Option("--all", help="Show every version.")] = False,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """List versions (newest last): status, stages, spec hash, metrics, lineage."""
    out = Output(json_mode)
    name = model_arg or model
    with open_registry() as reg:
        if name is not None:
            name = reg.resolve_model(name)
        rows = reg.list_versions(name, status=status, limit=None if all_ else limit)
        total = reg.count_versions(name) if not all_ and len(rows) == limit else len(rows)
    # The models themselves, not version_json dicts: pydantic-core writes them straight to
    # JSON (the same text). A generator for the table: --json skips formatting rows nobody
    # sees.
    out.data(rows)
    out.table(f"Versions of {name}" if name else "Versions",
              ["version", "status", "stages", "spec hash", "test loss (base)", "commit",
               "created"], (
        (v.ref, v.status, ", ".join(v.stages), v.spec_hash.removeprefix("sha256:")[:12],
         _loss(v.metrics), (v.git_commit or "")[:10],
         ts(v.created_at)) for v in rows
    ))
    if total > len(rows):
        out.message(f"[dim]{total - len(rows)} older version(s) not shown; use --all or "
                    "--limit N[/dim]")


def show(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] VERSION")],
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """One version: its model, lineage, metrics, gate results and artifact files."""
    out = Output(json_mode)
    name, (ref,) = split_args(args, ["VERSION"], model)
    with open_registry() as reg:
        v = reg.resolve(name, ref)
        m = reg.get_model(v.model)
        art = reg.get_artifact(v.artifact_digest) if v.artifact_digest else None
        human = reg.human_evaluations(v.model, v.number)
    from recipes.training.tracking.record import TrackingRecord

    files = art.manifest.get("files", []) if art else []
    revision = (art.manifest.get("identity") or {}).get("base_model_revision") if art else None
    tracking = TrackingRecord.from_manifest(art.manifest) if art else None
    out.data({**version_json(v), "artifact": None if art is None else {
        "digest": art.digest, "size_bytes": art.size_bytes, "files": files},
        "tracking": None if tracking is None else {
            **tracking.to_json(), "mlflow_url": tracking.mlflow.url if tracking.mlflow else None},
        "human_evaluations": [h.model_dump(mode="json") for h in human]})
    out.table(f"{v.ref}", ["field", "value"], [
        ("status", v.status), ("stages", ", ".join(v.stages) or "-"),
        ("description", m.description or "-"), ("owner", m.owner or "-"),
        ("labels", ", ".join(f"{k}={val}" for k, val in sorted(m.labels.items())) or "-"),
        ("adapter name", v.adapter_name), ("spec hash", v.spec_hash),
        ("artifact", v.artifact_digest or "-"), ("method / rank", f"{v.method} / {v.adapter_rank}"),
        ("objective", v.objective),
        ("base model", v.base_model_path + (f" (revision {revision})" if revision else "")),
        ("parent", vref(v.parent_number)), ("run", v.run_id if v.run_id is not None else "-"),
        ("git commit", (v.git_commit or "-") + (" (dirty)" if v.git_dirty else "")),
        ("recipe", v.recipe_path or "-"), ("creator", v.creator), ("created", ts(v.created_at)),
        ("gates passed", v.gates_passed),
        *(tracking.links() if tracking is not None else []),
    ])
    report = _report(v.metrics)
    out.table("Metrics (generated samples: --json)", ["metric", "tuned", "base"], [
        (r.metric, f"{r.tuned:.6g}", "" if r.base is None else f"{r.base:.6g}")
        for r in (report.comparison() if report is not None else [])])
    if report is not None and "gates" in report.model_fields_set:
        out.table("Gates", ["gate", "value", "threshold", "passed", "reason"], [
            (g.gate, str(g.value), str(g.threshold), str(g.passed), g.reason)
            for g in report.gates
        ] or [("(none configured)", "", "", "", "")])
    _human_table(out, v, human)
    out.table("Artifact files", ["path", "size", "sha256"], [
        (f["path"], f["size"], f["sha256"][:16]) for f in files
    ])


def _human_table(out: Output, v: VersionPublic, human: list[HumanEvalResult]) -> None:
    """The newest human evaluation, and what the recipe's deploy.human_eval says of it."""
    from recipes.evaluation.human.results import gate_problems
    from registry.human_eval import requirement

    gate = requirement(v.recipe_text, v.ref)
    if not human and gate is None:
        return
    rows: list[tuple[str, str]] = []
    if human:
        h = human[-1]
        rows += [("latest", h.describe()), ("imported", ts(h.imported_at)),
                 ("evaluations", str(len(human)))]
    if gate is not None:
        problems = gate_problems(gate, human[-1] if human else None, v.ref)
        rows.append((f"required (win rate >= {gate.min_win_rate}, alpha >= {gate.min_alpha})",
                     "passes" if not problems else "; ".join(problems)))
    out.table("Human evaluation", ["field", "value"], rows)


def diff(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] V1 V2")],
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Compare two versions: recipe diff, changed data files and metric deltas."""
    import difflib

    out = Output(json_mode)
    name, (r1, r2) = split_args(args, ["V1", "V2"], model)
    with open_registry() as reg:
        a = reg.resolve(name, r1)
        b = reg.resolve(name, r2)
    recipe_diff = list(difflib.unified_diff(
        a.recipe_text.splitlines(), b.recipe_text.splitlines(), f"{a.ref}/recipe.yaml",
        f"{b.ref}/recipe.yaml", lineterm=""))
    ra, rb = _report(a.metrics), _report(b.metrics)
    ma = ra.numeric() if ra is not None else {}
    mb = rb.numeric() if rb is not None else {}
    deltas: list[dict[str, Any]] = [{"metric": k, "a": ma.get(k), "b": mb.get(k),
               "delta": (mb[k] - ma[k]) if k in ma and k in mb else None}
              for k in sorted(set(ma) | set(mb))]
    data_changed = sorted(k for k in set(a.data_digests) | set(b.data_digests)
                          if a.data_digests.get(k) != b.data_digests.get(k))
    out.data({"a": a.ref, "b": b.ref, "recipe_diff": recipe_diff, "metrics": deltas,
              "data_changed": data_changed,
              "base_model_changed": a.base_model != b.base_model})
    if recipe_diff:
        out.message("\n".join(recipe_diff))
    else:
        out.message("Recipes are identical.")
    if data_changed:
        out.message("Data files changed: " + ", ".join(data_changed))
    out.table(f"Metrics {a.ref} -> {b.ref}", ["metric", a.ref, b.ref, "delta"], [
        (d["metric"], _num(d["a"]), _num(d["b"]),
         "" if d["delta"] is None else f"{d['delta']:+.4g}") for d in deltas
    ])


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.4g}"


def archive(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] VERSION")],
    reason: ReasonOpt = "",
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Retire a version (refused while a stage points at it)."""
    out = Output(json_mode)
    name, (version,) = split_args(args, ["VERSION"], model)
    with open_registry() as reg:
        v = reg.resolve(name, version)
        v = reg.set_version_status(v.model, v.number, VersionStatus.archived, reason=reason)
    out.data(version_json(v))
    out.message(f"{v.ref} archived.")


def register(app: typer.Typer) -> None:
    app.command("register")(register_cmd)
    app.command()(versions)
    app.command()(show)
    app.command()(diff)
    app.command()(archive)
