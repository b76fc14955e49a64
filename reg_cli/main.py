"""The `reg` command: one typer app, one module per noun, errors mapped in one place.

Heavy libraries (torch, transformers, peft, trl, vllm) are imported inside the
commands that need them, so registry commands start in a fraction of a second.
"""

from __future__ import annotations

import sys

import typer

from reg_cli import recipes_cmd, reconcile_cmd, registry_cmd, serve_cmd, train_cmd
from reg_cli.errors import render_error

app = typer.Typer(
    name="reg",
    help="Declarative model registry and deployment manager for fine-tuned LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (recipes_cmd, train_cmd, registry_cmd, reconcile_cmd, serve_cmd):
    module.register(app)


def main() -> None:
    try:
        # Without standalone mode click *returns* the code of a `typer.Exit(code)`.
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc != 0:
            sys.exit(rc)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    except BaseException as e:
        import click

        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.stderr.write("Aborted.\n")
            sys.exit(1)
        code = render_error(e)
        if code is None:
            raise
        sys.exit(code)


if __name__ == "__main__":
    main()
