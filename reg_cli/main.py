"""Where a `reg` process starts: the start-up policy, the app, errors mapped in one place.

1. ``startup.begin()`` before anything else is imported (``reg_cli.startup``).
2. The app (``reg_cli.app``) parses the arguments and runs one command.
3. An exception a user can cause becomes a message and an exit code
   (``reg_cli.errors``); anything else is a bug and keeps its traceback.
4. ``startup.end()``, however the command ended.
"""

from __future__ import annotations

import sys

from reg_cli import startup


def main() -> None:
    startup.begin()
    try:
        _run()
    finally:
        startup.end()


def _run() -> None:
    import typer

    from reg_cli.app import app
    from reg_cli.errors import render_error

    try:
        # Without standalone mode the parser *returns* the code of a `typer.Exit(code)`.
        rc = app(standalone_mode=False, prog_name="reg")
        if isinstance(rc, int) and rc != 0:
            sys.exit(rc)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.stderr.write("Aborted.\n")
        sys.exit(1)
    except typer.TyperException as e:  # a usage error: typer's parser explains it
        show = getattr(e, "show", None)
        if callable(show):
            show()
        else:
            sys.stderr.write(f"Error: {e.format_message()}\n")
        sys.exit(e.exit_code)
    except BaseException as e:
        code = render_error(e)
        if code is None:
            raise
        sys.exit(code)


if __name__ == "__main__":
    main()
