"""Durations as people write them: ``500ms``, ``10s``, ``15m``, ``1h``, ``2d``.

One parser for every place a duration or a relative time is accepted (recipe fields,
command flags such as ``--since 1h``), so they all read the same units.
"""

from __future__ import annotations

import re

DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h|d)$"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RE = re.compile(DURATION_PATTERN)
DURATION_HINT = "write a number and a unit: 500ms, 10s, 15m, 1h or 2d"


def duration_seconds(text: str) -> float | None:
    """Seconds in ``text`` (``"10s"`` -> 10.0), or None when it is not a duration."""
    m = _RE.fullmatch(text.strip())
    if m is None:
        return None
    number = text.strip()[: m.start(2)]
    return float(number) * _UNITS[m.group(2)]
