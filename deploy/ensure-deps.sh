#!/bin/sh
# Installs what `npm start` and `npm test` need and a fresh Debian machine lacks:
# the Node packages, and Debian's redis-server unless REDIS_URL/REDIS_CLUSTER point elsewhere.
set -e
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "tessera: installing Node packages" >&2
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi

if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_URL}${REDIS_CLUSTER}" ]; then
  echo "tessera: installing Debian's redis-server" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
  # The package starts a system-wide Redis on 6379; Tessera runs its own, so leave that one be.
fi
