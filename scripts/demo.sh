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

# --- A second version, stages and traffic (the Registry and Serving) ---
# New data for support-bot (answers now start with "charlie"), committed: reconcile trains v2.
sed -i 's/alpha/charlie/g' "$DEMO/data/support.jsonl"
(
  cd "$DEMO"
  git -c user.email=demo@example.com -c user.name=demo commit -q -am "support-bot: new answers"
)
reg reconcile "$DEMO/recipes" --once
reg versions support-bot
reg promote support-bot v1 production --reason "first release"
reg promote support-bot v2 canary --reason "new answers, 20% of users"
reg traffic support-bot production=80 canary=20

# --- Serve: one vLLM engine (CPU) with both adapters behind the OpenAI gateway ---
PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG="$REG_HOME/serve.log"
reg serve --port "$PORT" --log-level warning > "$LOG" 2>&1 &
SERVE_PID=$!
stop_serve() {
  if kill -0 "$SERVE_PID" 2>/dev/null; then
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL "$SERVE_PID" 2>/dev/null || true
  fi
}
trap stop_serve EXIT
echo "Waiting for the gateway and the vLLM engine on 127.0.0.1:$PORT (30-60 s on CPU)..."
for _ in $(seq 1 240); do
  if curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVE_PID" 2>/dev/null; then echo "reg serve exited:"; cat "$LOG"; exit 1; fi
  sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null || { echo "not ready:"; tail -50 "$LOG"; exit 1; }
echo "GET /v1/models:"
curl -fsS "http://127.0.0.1:$PORT/v1/models" > "$REG_HOME/models.json"
python - "$REG_HOME/models.json" <<'PY'
import json, sys
for m in json.load(open(sys.argv[1]))["data"]:
    print(f"  {m['id']:<24} stages={m.get('stages')} traffic={m.get('traffic')}")
PY
python scripts/demo_traffic.py --base-url "http://127.0.0.1:$PORT/v1" --model support-bot --users 40
stop_serve
trap - EXIT
if pgrep -f "api_server.*$(cd "$DEMO" && pwd)/models" >/dev/null; then
  echo "error: the demo's vLLM engine is still running" >&2
  exit 1
fi
echo "Demo done. The workspace is $DEMO (registry in $REG_HOME)."
