#!/usr/bin/env bash
# Installs the servers the integration tests start on loopback (PostgreSQL,
# Prometheus) and the browser the status page's tests drive (headless Chromium, with a
# font) from Debian's packages when they are missing. Needs root, as on
# the project's machines; the tests start and stop the servers themselves.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "Missing ${need[*]}; run as root or: apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "Installing ${need[*]} (Debian packages)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
