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

# --- GitOps (the Reconciler): the recipes live in git; reg trains what they say. ---
export REG_HOME=${REG_HOME:-$(cd "$DEMO" && pwd)/.reg}   # the registry lives in the workspace (git-ignored)
(
  cd "$DEMO"
  git init -q -b main
  git add .
  git -c user.email=demo@example.com -c user.name=demo commit -q -m "example recipes"
)
set +e
reg plan "$DEMO/recipes"          # exit 2: changes pending (terraform-style)
rc=$?
set -e
if [ "$rc" -ne 2 ]; then
  echo "expected \`reg plan\` to exit 2 (changes pending), got $rc" >&2
  exit 1
fi
reg reconcile "$DEMO/recipes" --once
reg plan "$DEMO/recipes"          # exit 0: in sync
reg versions
