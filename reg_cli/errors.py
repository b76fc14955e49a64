"""Every exception a user can cause, mapped to a message and a next step, in one place."""

from __future__ import annotations

from collections.abc import Callable

from recipes.core.errors import RegError, ValidationFailed
from reg_cli.output import err_console


def _validation(e: BaseException) -> tuple[str, str | None, int]:
    assert isinstance(e, ValidationFailed)
    for p in e.problems:
        err_console.print(p.render(), markup=False, highlight=False, soft_wrap=True)
    return e.summary(), "fix the problems above, then run `reg validate` again", 1


def _reg_error(e: BaseException) -> tuple[str, str | None, int]:
    assert isinstance(e, RegError)
    return str(e), e.hint, e.exit_code


def _file_not_found(e: BaseException) -> tuple[str, str | None, int]:
    assert isinstance(e, FileNotFoundError)
    return f"file not found: {e.filename}", "check the path", 1


def _permission(e: BaseException) -> tuple[str, str | None, int]:
    assert isinstance(e, PermissionError)
    return f"permission denied: {e.filename}", "check the file's owner and mode", 1


# Ordered: the first matching type wins, so subclasses come before bases.
# Other layers' errors derive from RegError and carry their own hint.
Handler = Callable[[BaseException], tuple[str, str | None, int]]
ERROR_TABLE: list[tuple[type[BaseException], Handler]] = [
    (ValidationFailed, _validation),
    (RegError, _reg_error),
    (FileNotFoundError, _file_not_found),
    (PermissionError, _permission),
]


def extra_handlers() -> list[
    tuple[type[BaseException], Callable[[BaseException], tuple[str, str | None, int]]]
]:
    """Handlers for third-party exceptions, imported lazily so `reg --help` stays light."""
    handlers: list[
        tuple[type[BaseException], Callable[[BaseException], tuple[str, str | None, int]]]
    ] = []
    try:
        from sqlalchemy.exc import OperationalError
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return handlers

    def _db(e: BaseException) -> tuple[str, str | None, int]:
        return (f"cannot use the registry database: {getattr(e, 'orig', e)}",
                "check REG_DATABASE_URL / REG_HOME and that the server is up", 1)

    handlers.append((OperationalError, _db))
    return handlers


def render_error(e: BaseException) -> int | None:
    """Print a known error and return its exit code; None if the error is unknown (a bug)."""
    for etype, handler in ERROR_TABLE + extra_handlers():
        if isinstance(e, etype):
            message, hint, code = handler(e)
            err_console.print(f"[bold red]Error:[/bold red] {message}", highlight=False)
            if hint:
                err_console.print(f"[dim]Hint: {hint}[/dim]", highlight=False)
            return code
    return None
