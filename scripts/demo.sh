#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded default. The steps, each a real
# `reg` command, are in scripts/demo.py (its docstring lists them).
set -euo pipefail
exec .venv/bin/python scripts/demo.py "$@"
