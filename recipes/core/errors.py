"""Error types shared by every layer.

Every error a user can cause derives from :class:`RegError`. The CLI maps
them to messages in one place (``reg_cli/errors.py``); each carries a
``hint`` with the next step so the message is actionable.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class RegError(Exception):
    """Base class for errors caused by user input or state, never by a bug."""

    hint: str | None = None
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


@dataclass(frozen=True)
class Problem:
    """One validation problem, located in a file."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str
    got: str | None = None
    hint: str | None = None

    def render(self) -> str:
        loc = self.file
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        text = f"{loc}: {self.field or '<document>'}: {self.message}"
        if self.got is not None:
            text += f" (got {self.got})"
        if self.hint:
            text += f" [hint: {self.hint}]"
        return text


@dataclass
class ValidationFailed(RegError):
    """All problems found in one or more recipe files, reported at once."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        Exception.__init__(self, self.summary())

    def summary(self) -> str:
        files = sorted({p.file for p in self.problems})
        return f"{len(self.problems)} problem(s) in {len(files)} file(s)"

    def __str__(self) -> str:
        return "\n".join(p.render() for p in self.problems)


class DataError(RegError):
    """A data file is missing, malformed, or empty after cleaning."""


class ModelError(RegError):
    """A base model path is missing or is not a loadable model."""
