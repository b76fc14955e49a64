"""Registry commands that change state: register, promote, rollback, archive, export, db.

Thin: parse, call ``registry.api.Registry``, render through ``Output``. The
registry is imported inside each command so `reg --help` stays light; nothing
here imports torch or transformers (`reg export --merged` does, lazily).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reg_cli._registry import open_registry
from reg_cli.output import JsonOpt, Output

if TYPE_CHECKING:
    from registry.api import StageResult
    from registry.tables import VersionPublic

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", envvar="REG_MODEL", show_envvar=True,
                 help="Model name, when the registry holds several."),
]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why; kept in the audit log.")]


def split_args(
    args: list[str], names: list[str], model: str | None
) -> tuple[str | None, list[str]]:
    """``[MODEL] A B``: the optional leading model, then exactly ``names``."""
    from registry.errors import RegistryError

    if len(args) == len(names) + 1:
        if model is not None and args[0] != model:
            raise RegistryError(f"model named twice: {args[0]!r} and --model {model!r}")
        return args[0], args[1:]
    if len(args) == len(names):
        return model, args
    usage = " ".join(["[MODEL]", *names])
    raise RegistryError(f"expected {usage}, got {len(args)} argument(s): {' '.join(args) or '-'}",
                        hint=f"e.g. `reg promote support-bot v2 production` ({usage})")


def _stage_message(out: Output, r: StageResult) -> None:
    frm = "none" if r.from_version is None else f"v{r.from_version}"
    to = "none" if r.to_version is None else f"v{r.to_version}"
    out.data({"model": r.model, "stage": r.stage, "action": r.action.value, "from": r.from_version,
              "to": r.to_version, "changed": r.changed, "forced": r.forced, "event": r.event_id,
              "warnings": list(r.warnings)})
    for warning in r.warnings:
        out.message(f"[yellow]Warning:[/yellow] {warning}")
    if not r.changed:
        out.message(f"{r.model} {r.stage} already points at {to}; nothing changed.")
        return
    forced = " [yellow](forced)[/yellow]" if r.forced else ""
    out.message(f"[green]{r.model} {r.stage}: {frm} -> {to}[/green]{forced}")


def version_json(v: VersionPublic) -> dict[str, Any]:
    """A version for --json: every field, then ``adapter_name``."""
    return v.model_dump(mode="json")


def register_cmd(
    artifact_dir: Annotated[Path, typer.Argument(help="A training artifact directory.")],
    run_id: Annotated[int | None, typer.Option(help="Training run id, for lineage.")] = None,
    git_commit: Annotated[str | None, typer.Option(help="Git commit of the recipe.")] = None,
    recipe_path: Annotated[str | None, typer.Option(help="Recipe file, for lineage.")] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Register a training artifact as the next version of its model (idempotent)."""
    out = Output(json_mode)
    with open_registry() as reg:
        res = reg.register(artifact_dir, run_id=run_id, git_commit=git_commit,
                           recipe_path=recipe_path)
    v = res.version
    out.data({"created": res.created, "version": version_json(v)})
    if res.created:
        out.message(f"[green]Registered {v.ref}[/green] ({v.status}, artifact "
                    f"{(v.artifact_digest or '')[:19]})")
    else:
        out.message(f"{v.ref} already holds this spec hash ({v.status}); nothing registered.")
    out.hint(f"reg promote {v.model} v{v.number} staging")


def promote(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] VERSION STAGE",
                                              help="e.g. `v2 production` or `bot@v2 production`.")],
    reason: ReasonOpt = "",
    force: Annotated[bool, typer.Option(
        help="Promote a version that failed its gates, or beyond the engine's adapter "
        "slots (recorded).")] = False,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Point a stage (production, staging, canary, ...) at a version."""
    out = Output(json_mode)
    name, (version, stage) = split_args(args, ["VERSION", "STAGE"], model)
    with open_registry() as reg:
        r = reg.promote(name, version, stage, reason=reason, force=force)
    _stage_message(out, r)
    if r.changed:
        out.hint(f"reg history {r.model} (undo with `reg rollback {r.model} {r.stage}`)")


def rollback(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] STAGE")],
    reason: ReasonOpt = "",
    force: Annotated[bool, typer.Option(
        help="Roll back even beyond the engine's adapter slots (recorded).")] = False,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Point a stage back at the version it held before its last change."""
    out = Output(json_mode)
    name, (stage,) = split_args(args, ["STAGE"], model)
    with open_registry() as reg:
        r = reg.rollback(name, stage, reason=reason, force=force)
    _stage_message(out, r)
    out.hint(f"reg history {r.model} --stage {r.stage}")


def archive(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] VERSION")],
    reason: ReasonOpt = "",
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Retire a version (refused while a stage points at it)."""
    from registry.versions import VersionStatus

    out = Output(json_mode)
    name, (version,) = split_args(args, ["VERSION"], model)
    with open_registry() as reg:
        v = reg.resolve(name, version)
        v = reg.set_version_status(v.model, v.number, VersionStatus.archived, reason=reason)
    out.data(version_json(v))
    out.message(f"{v.ref} archived.")


def export(
    args: Annotated[list[str], typer.Argument(metavar="[MODEL] VERSION OUT")],
    merged: Annotated[bool, typer.Option(help="Merge the adapter into the base model and save "
                                         "a full safetensors model.")] = False,
    model: ModelOpt = None,
    json_mode: JsonOpt = False,
) -> None:
    """Copy a version's adapter to OUT, or (--merged) a full model with the adapter merged in."""
    from registry.export import export_version

    out = Output(json_mode)
    name, (version, dest) = split_args(args, ["VERSION", "OUT"], model)
    with open_registry() as reg:
        v = reg.resolve(name, version)
        path = export_version(reg, v, Path(dest), merged=merged)
    out.data({"version": v.ref, "out": str(path), "merged": merged})
    out.message(f"[green]Exported {v.ref}[/green] to {path}" + (" (merged)" if merged else ""))


db_app = typer.Typer(help="Registry database maintenance.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(json_mode: JsonOpt = False) -> None:
    """Apply the registry's schema migrations (also done automatically on first use)."""
    from registry.db import HEAD_REVISION, current_revision, open_engine, upgrade
    from registry.settings import Settings

    out = Output(json_mode)
    settings = Settings.from_env()
    engine = open_engine(settings.database_url)
    try:
        before = current_revision(engine)
        if before != HEAD_REVISION:
            upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    out.data({"database": engine.url.render_as_string(hide_password=True), "from": before,
              "to": after})
    out.message(f"Database {engine.url.render_as_string(hide_password=True)}: "
                + ("already at " + str(after) if before == after else f"{before} -> {after}"))


def register(app: typer.Typer) -> None:
    """Add the registry commands to the `reg` app."""
    from reg_cli import registry_read

    app.command("register")(register_cmd)
    app.command()(promote)
    app.command()(rollback)
    app.command()(archive)
    app.command()(export)
    registry_read.register(app)
    app.add_typer(db_app, name="db")
