"""Prompt templates: the built-in ones, and a user's template file checked before any request.

A template is text with ``{name}`` placeholders (Python's format syntax; ``{{`` and ``}}``
are literal braces). Augment's templates take ``{text}`` (the row's text to rewrite);
synthesize's take ``{topic}``. A template file with another placeholder, or without the
one it needs, is refused with its file and line.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from pathlib import Path

from recipes.core.errors import DataError

# What the endpoint is told, as a system message, for every generation request.
SYSTEM = ("You write training data. Reply with the requested text only: no preamble, "
          "no quotes, no explanation.")

BUILTIN: dict[str, str] = {
    "paraphrase": ("Rewrite this request in different words. Keep its meaning and every "
                   "detail it asks about.\n\n{text}"),
    "paraphrase-text": ("Rewrite this passage in different words, keeping its meaning.\n\n"
                        "{text}"),
    "question": "Write one request a user might send to a support assistant about {topic}.",
    "passage": "Write a short passage about {topic}.",
}

PLACEHOLDER = {"augment": "text", "synthesize": "topic"}


@dataclass(frozen=True)
class Template:
    """A checked template: its name (built-in name or file as shown), text and digest."""

    name: str
    text: str
    placeholder: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def render(self, value: str) -> str:
        return self.text.format_map({self.placeholder: value})


def builtin(name: str, placeholder: str) -> Template:
    return Template(f"builtin:{name}", BUILTIN[name], placeholder)


def parse_template(text: str, shown: str, placeholder: str) -> Template:
    """``text`` as a template needing ``{placeholder}``; a DataError names the line and fix."""
    problems: list[str] = []
    found = False
    for lineno, line in enumerate(text.splitlines() or [""], start=1):
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(line) if f is not None]
        except ValueError as e:  # a lone '{' or '}'
            problems.append(f"{shown} line {lineno}: {e}")
            continue
        for f in fields:
            if f == placeholder:
                found = True
            else:
                problems.append(f"{shown} line {lineno}: unknown placeholder {{{f}}}")
    if not problems and not found:
        problems.append(f"{shown}: no {{{placeholder}}} placeholder")
    if problems:
        raise DataError("bad template:\n" + "\n".join(problems),
                        hint=f"the template takes {{{placeholder}}} only; write literal braces "
                        "as {{ and }}")
    return Template(shown, text, placeholder)


def read_template(path: Path, shown: str, placeholder: str) -> Template:
    """A template file, read as UTF-8 text and checked."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise DataError(f"template file not found: {shown}", hint="check the --template path"
                        ) from e
    except UnicodeDecodeError as e:
        raise DataError(f"{shown} is not UTF-8 text ({e.reason} at byte {e.start})",
                        hint="save the template as UTF-8") from e
    return parse_template(text, shown, placeholder)
