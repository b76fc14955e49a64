#!/usr/bin/env bash
# `make demo`: the main job on the embedded default (SQLite, local artifact
# store, vLLM on CPU, the tiny model built locally).
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
DEMO=${DEMO_DIR:-demo}
rm -rf "$DEMO"
reg init "$DEMO" --example
reg validate "$DEMO/recipes"
for recipe in "$DEMO"/recipes/*.yaml; do
  reg data "$recipe"
done
