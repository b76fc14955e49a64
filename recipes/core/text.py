"""How a value from a recipe is shown inside a message: whole when short, clipped when not.

A message names the problem and its fix; a value pasted whole (a 20,000-character
string) would bury both, so every echo of user input goes through :func:`shown`.
"""

from __future__ import annotations

import json
from typing import Any

SHOWN_CHARS = 60


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A string as its repr, anything else as JSON, cut to ``limit`` characters with '...'."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
