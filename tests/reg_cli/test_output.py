"""reg_cli.output: --json writes the text json.dumps(indent=2) writes."""

from __future__ import annotations

import json
from pathlib import Path

from reg_cli.output import to_json


def test_json_output_is_the_text_json_dumps_writes() -> None:
    """--json goes through pydantic-core for speed; scripts must see the same text."""
    data = [{"model": "bot", "number": 2**70, "loss": 0.1, "nan": float("nan"),
             "inf": float("-inf"), "empty": {}, "none": [], "ok": True, "missing": None,
             "text": 'é 😀 "quoted" \\ \n\t\x00', "path": Path("/a/b"), "pair": (1, 2.5)}]
    assert to_json(data) == json.dumps(data, indent=2, default=str)
