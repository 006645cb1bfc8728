#!/bin/sh
# Installs what `npm start`, `npm test` and the benchmarks need and a fresh Debian machine lacks:
# the Node packages, Debian's redis-server unless REDIS_URL/REDIS_CLUSTER point elsewhere,
# Debian's chromium for the browser tests of the web pages (test/pages; not for `npm start`),
# and Debian's Kamailio and sipp for the Kamailio connector's tests and benchmark (test/kamailio).
#
#   sh deploy/ensure-deps.sh            everything (`npm test`, .ci/run)
#   sh deploy/ensure-deps.sh chromium   only the browser (what test/pages runs when it is missing)
#   sh deploy/ensure-deps.sh kamailio   only Kamailio and sipp (`npm run bench:kamailio`)
set -e
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_chromium() {
  # playwright-core drives Debian's build (executablePath /usr/bin/chromium);
  # `npx playwright install` cannot download a browser here.
  if [ ! -x /usr/bin/chromium ]; then
    echo "tessera: installing Debian's chromium (browser tests)" >&2
    apt_install chromium fonts-dejavu-core
  fi
}

ensure_kamailio() {
  # evapi and jansson are both in kamailio-extra-modules; sip-tester is sipp.
  # Tests and benchmarks run their own Kamailio on loopback ports; a system-wide one the
  # package may start is left be.
  if ! command -v kamailio >/dev/null 2>&1 || ! command -v sipp >/dev/null 2>&1 \
    || ! ls /usr/lib/*/kamailio/modules/evapi.so /usr/lib/*/kamailio/modules/jansson.so >/dev/null 2>&1; then
    echo "tessera: installing Debian's kamailio and sipp (Kamailio connector tests)" >&2
    apt_install kamailio kamailio-extra-modules sip-tester
  fi
}

if [ "${1:-}" = "chromium" ]; then
  ensure_chromium
  exit 0
fi
if [ "${1:-}" = "kamailio" ]; then
  ensure_kamailio
  exit 0
fi

if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "tessera: installing Node packages" >&2
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi

if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_URL}${REDIS_CLUSTER}" ]; then
  echo "tessera: installing Debian's redis-server" >&2
  apt_install redis-server redis-tools
  # The package starts a system-wide Redis on 6379; Tessera runs its own, so leave that one be.
fi

# A server started with `npm start` serves its pages to other people's browsers, and a
# benchmark drives no browser: neither needs one. Without it the browser tests say why and
# skip (and fail under CI, which must run them).
case "${npm_lifecycle_event:-}" in
  start | bench | bench:*) ;;
  *) ensure_chromium || echo "tessera: could not install chromium; test/pages will not run" >&2 ;;
esac

# The connector itself needs no Kamailio on this machine (it reaches one over TCP): only
# the tests and the Kamailio benchmark do.
case "${npm_lifecycle_event:-}" in
  start | bench | bench:switch | bench:redeem | bench:sales | bench:soak | bench:ids | bench:tick-script) ;;
  *) ensure_kamailio || echo "tessera: could not install kamailio and sipp; test/kamailio will not run" >&2 ;;
esac
