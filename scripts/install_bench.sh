#!/usr/bin/env bash
# Installs what `make bench` compares reg with, when missing: wrk and nginx from Debian's
# packages (as root, like scripts/install_services.sh), and vllm-router from PyPI into its
# own virtual environment, bench/.venv (a peer to measure, never a dependency of reg).
# A peer that cannot be installed is reported and left out; the benchmarks then list its
# rows as not measured.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "Missing ${need[*]}; run as root or: apt-get install -y ${need[*]}" >&2
  else
    echo "Installing ${need[*]} (Debian packages)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
# vllm-router 0.1.17 is a Rust binary behind a small Python launcher; --no-deps keeps its
# declared dependencies (which include vLLM itself) out: the launcher needs only aiohttp,
# fastapi, uvicorn, requests,
# setproctitle and orjson.
if [ ! -x bench/.venv/bin/python ] || ! bench/.venv/bin/python -c "import vllm_router.launch_router" 2>/dev/null; then
  echo "Installing vllm-router into bench/.venv ..."
  python3 -m venv bench/.venv
  { bench/.venv/bin/python -m pip install -q --disable-pip-version-check aiohttp fastapi uvicorn requests setproctitle orjson \
    && bench/.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps vllm-router==0.1.17; } \
    2>&1 | { grep -v '^WARNING: Location' || true; } \
    || echo "vllm-router not installed: its rows will say so" >&2
fi
