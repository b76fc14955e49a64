"""The end-of-run summary of reliability figures."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.figures import Figure, summary_lines, write_json


def test_lines_group_by_suite_and_align() -> None:
    figures = [Figure("crash", "reconciler trials", 12, "trials"),
               Figure("crash", "rollout trials", 10, "trials"),
               Figure("load", "RSS growth", 0.0412, "ratio")]
    assert summary_lines(figures) == [
        "crash:",
        "  reconciler trials  12 trials",
        "  rollout trials     10 trials",
        "load:",
        "  RSS growth         0.0412 ratio",
    ]
    assert summary_lines([]) == []


def test_the_json_keeps_every_field(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    write_json([Figure("bad input", "recipes", 1000, "generated")], out)
    assert json.loads(out.read_text()) == [
        {"suite": "bad input", "measure": "recipes", "value": 1000, "unit": "generated"}]
