"""The command line of a file generated from code: write it, or check it is current.

Shared by the dashboard (deploy/grafana/dashboard.py) and the metrics reference
(deploy/metrics_reference.py); `make dashboards` writes both, their tests check both.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def main(argv: Sequence[str] | None, *, description: str, default_out: Path,
         render: Callable[[], str], summary: Callable[[str], str]) -> int:
    """``--check`` exits 1 when ``--out`` differs from ``render()``; else it writes it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the file differs from what the code generates")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run `make dashboards`", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out} ({summary(text)})")
    return 0
