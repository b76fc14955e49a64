"""Registry commands that read: models, versions, show, diff, history, runs, events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from reg_cli._registry import open_registry
from reg_cli.output import JsonOpt, Output
from reg_cli.registry_cmd import ModelOpt, split_args, version_json


def ts(value: datetime | None) -> str:
    """A timestamp for people: UTC, to the second."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """ISO 8601 (`2025-06-01T12:00`, `...Z`, `...+02:00`); without a zone it means UTC."""
    from registry.errors import RegistryError

    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise RegistryError(f"{text!r} is not a timestamp",
                            hint="use ISO 8601, e.g. 2025-06-01T12:00:00Z") from e
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _v(n: int | None) -> str:
    return "-" if n is None else f"v{n}"


def models(json_mode: JsonOpt = False) -> None:
    """List models with their version count and stages."""
    out = Output(json_mode)
    with open_registry() as reg:
        rows = reg.list_models()
    out.data([m.model_dump(mode="json") for m in rows])
    out.table("Models", ["model", "versions", "latest", "stages", "description"], [
        (m.name, m.versions, _v(m.latest),
         ", ".join(f"{s}={_v(n)}" for s, n in sorted(m.stages.items())), m.description)
        for m in rows
    ])
    if not rows:
        out.hint("reg register ARTIFACT_DIR, or reg reconcile RECIPES_DIR")


def versions(
    model_arg: Annotated[str | None, typer.Argument(metavar="[MODEL]")] = None,
    status: Annotated[str | None, typer.Option(help="Only versions in this status.")] = None,
    limit: Annotated[int, typer.Option(help="Show the newest N.")] = 50,
    all_: Annotated[bool, typer.Option("--all", help="Show every version.")] = False,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """List versions (newest last): status, stages, spec hash, metrics, lineage."""
    from registry.versions import VersionStatus

    out = Output(json_mode)
    name = model_arg or model
    with open_registry() as reg:
        if name is not None:
            name = reg.resolve_model(name)
        st = VersionStatus(status) if status else None
        rows = reg.list_versions(name, status=st, limit=None if all_ else limit)
        total = reg.count_versions(name) if not all_ and len(rows) == limit else len(rows)
    # The models themselves, not version_json dicts: pydantic-core writes them straight to
    # JSON (the same text), ~60 ms for 10,000 against ~150 ms. A generator for the table:
    # --json skips formatting rows nobody sees.
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


def _loss(metrics: dict[str, Any]) -> str:
    """The tuned model's held-out loss with the base model's beside it: the test split's,
    else the validation split's (recipes.evaluation.evaluate's metrics.json), else a flat
    ``eval_loss`` (an artifact registered by hand)."""
    flat = flatten(metrics)
    for split in ("test.", "validation.", ""):
        key = "loss" if split else "eval_loss"
        if split + key in flat:
            base = flat.get(f"{split}base_loss")
            return f"{flat[split + key]:.4g}" + ("" if base is None else f" ({base:.4g})")
    return ""


def _metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, tuned, base) for each numeric leaf; ``x.base_y`` goes beside ``x.y``."""
    flat = flatten(metrics)
    rows: list[tuple[str, str, str]] = []
    for key, value in sorted(flat.items()):
        prefix, _, leaf = key.rpartition(".")
        if leaf.startswith("base_") and f"{prefix}.{leaf[5:]}".lstrip(".") in flat:
            continue
        base = flat.get(f"{prefix}.base_{leaf}".lstrip("."))
        rows.append((key, f"{value:.6g}", "" if base is None else f"{base:.6g}"))
    return rows


def show(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] VERSION")],
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """One version: lineage, metrics, gate results and artifact files."""
    out = Output(json_mode)
    name, (ref,) = split_args(args, ["VERSION"], model)
    with open_registry() as reg:
        v = reg.resolve(name, ref)
        art = reg.get_artifact(v.artifact_digest) if v.artifact_digest else None
    files = art.manifest.get("files", []) if art else []
    out.data({**version_json(v), "artifact": None if art is None else {
        "digest": art.digest, "size_bytes": art.size_bytes, "files": files}})
    out.table(f"{v.ref}", ["field", "value"], [
        ("status", v.status), ("stages", ", ".join(v.stages) or "-"),
        ("adapter name", v.adapter_name), ("spec hash", v.spec_hash),
        ("artifact", v.artifact_digest or "-"), ("method / rank", f"{v.method} / {v.adapter_rank}"),
        ("objective", v.objective), ("base model", v.base_model_path),
        ("parent", _v(v.parent_number)), ("run", v.run_id if v.run_id is not None else "-"),
        ("git commit", (v.git_commit or "-") + (" (dirty)" if v.git_dirty else "")),
        ("recipe", v.recipe_path or "-"), ("creator", v.creator), ("created", ts(v.created_at)),
        ("gates passed", v.gates_passed),
    ])
    out.table("Metrics (generated samples: --json)", ["metric", "tuned", "base"],
              _metric_rows(v.metrics))
    if isinstance(v.gate_results, list | dict):
        gates = v.gate_results if isinstance(v.gate_results, list) else [
            {"gate": k, **(g if isinstance(g, dict) else {"value": g})}
            for k, g in v.gate_results.items()]
        out.table("Gates", ["gate", "value", "threshold", "passed", "reason"], [
            (str(g.get("gate") or g.get("name") or "?"), str(g.get("value")),
             str(g.get("threshold")), str(g.get("passed")), str(g.get("reason") or ""))
            for g in gates if isinstance(g, dict)
        ] or [("(none configured)", "", "", "", "")])
    out.table("Artifact files", ["path", "size", "sha256"], [
        (f["path"], f["size"], f["sha256"][:16]) for f in files
    ])


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict, by dotted key."""
    out: dict[str, float] = {}
    for k, value in d.items():
        key = f"{prefix}{k}"
        if isinstance(value, dict):
            out.update(flatten(value, key + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def diff(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] V1 V2")],
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Compare two versions: recipe diff and metric deltas."""
    import difflib

    out = Output(json_mode)
    name, (r1, r2) = split_args(args, ["V1", "V2"], model)
    with open_registry() as reg:
        a = reg.resolve(name, r1)
        b = reg.resolve(name, r2)
    recipe_diff = list(difflib.unified_diff(
        a.recipe_text.splitlines(), b.recipe_text.splitlines(), f"{a.ref}/recipe.yaml",
        f"{b.ref}/recipe.yaml", lineterm=""))
    ma, mb = flatten(a.metrics), flatten(b.metrics)
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


def history(
    model_arg: Annotated[str | None, typer.Argument(metavar="[MODEL]")] = None,
    stage: Annotated[str | None, typer.Option("--stage", "-s", help="One stage only.")] = None,
    at: Annotated[str | None, typer.Option(help="Show what each stage pointed at at this "
                                           "time (ISO 8601, UTC if no zone).")] = None,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """The stage timeline: every promote and rollback, who, when, why."""
    out = Output(json_mode)
    when = parse_time(at) if at else None
    with open_registry() as reg:
        name = reg.resolve_model(model_arg or model)
        events = reg.history(name, stage=stage, at=when)
        pointers = reg.stages_at(name, when) if when else {
            s: v.number for s, v in reg.stage_map(name).items()}
    if stage is not None:
        pointers = {k: v for k, v in pointers.items() if k == stage}
    out.data({"model": name, "at": None if when is None else when.isoformat(),
              "events": [e.model_dump(mode="json") for e in events], "stages": pointers})
    out.table(f"Stage history of {name}" + (f" up to {ts(when)}" if when else ""),
              ["#", "time", "stage", "action", "change", "actor", "reason"], [
        (e.id, ts(e.at), e.stage, e.action + (" (forced)" if e.forced else ""),
         f"{_v(e.from_version)} -> {_v(e.to_version)}", e.actor, e.reason) for e in events
    ])
    out.table("Stages" + (f" at {ts(when)}" if when else " now"), ["stage", "version"],
              [(s, _v(n)) for s, n in sorted(pointers.items())])


def runs(
    model: ModelOpt = None,
    status: Annotated[str | None, typer.Option(help="Only runs in this status.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N runs.")] = 50,
    json_mode: JsonOpt = False,
) -> None:
    """Training runs, newest first."""
    out = Output(json_mode)
    with open_registry() as reg:
        rows = reg.list_runs(model=model, status=status, limit=limit)
    out.data([r.model_dump(mode="json") for r in rows])
    out.table("Runs", ["run", "model", "status", "phase", "attempts", "version", "spec hash",
                       "updated", "error"], [
        (r.id, r.model, r.status, r.phase, r.attempts, _v(r.version_number),
         r.spec_hash.removeprefix("sha256:")[:12], ts(r.updated_at), r.error[:60])
        for r in rows
    ])


def events_cmd(
    since: Annotated[str | None, typer.Option(help="An event id, or an ISO 8601 time.")] = None,
    model: ModelOpt = None,
    limit: Annotated[int, typer.Option(help="Newest N events.")] = 100,
    json_mode: JsonOpt = False,
) -> None:
    """The audit log: everything that changed state, who did it and why."""
    out = Output(json_mode)
    since_id = int(since) if since and since.isdigit() else None
    since_time = parse_time(since) if since and since_id is None else None
    with open_registry() as reg:
        rows = reg.events(since_id, since=since_time, model=model, limit=limit)
    out.data([e.model_dump(mode="json") for e in rows])
    out.table("Events", ["#", "time", "kind", "model", "actor", "message"], [
        (e.id, ts(e.at), e.kind, e.model or "", e.actor, e.message) for e in rows
    ])


def register(app: typer.Typer) -> None:
    app.command()(models)
    app.command()(versions)
    app.command()(show)
    app.command()(diff)
    app.command()(history)
    app.command()(runs)
    app.command("events")(events_cmd)
