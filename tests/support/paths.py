"""Where the tests find the checkout they run from (subprocesses run `reg` with it as cwd)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
