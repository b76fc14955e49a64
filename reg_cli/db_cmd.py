"""`reg db`: registry database maintenance."""

from __future__ import annotations

import typer

from reg_cli.output import JsonOpt, Output

db_app = typer.Typer(help="Registry database maintenance.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade(json_mode: JsonOpt = False) -> None:
    """Apply the registry's schema migrations (also done automatically on first use)."""
    from registry.db import HEAD_REVISION, current_revision, open_engine
    from registry.db import upgrade as run_upgrade
    from registry.settings import Settings

    out = Output(json_mode)
    engine = open_engine(Settings.from_env().database_url)
    try:
        before = current_revision(engine)
        if before != HEAD_REVISION:
            run_upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    out.data({"database": where, "from": before, "to": after})
    out.message(f"Database {where}: "
                + ("already at " + str(after) if before == after else f"{before} -> {after}"))


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
