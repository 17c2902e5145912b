#!/usr/bin/env bash
# Builds the TypeScript client (clients/typescript) and runs its tests with Node's own runner
# against a server started here from ${PLINTH_BIN:-target/debug/plinth}, on a fresh embedded
# database. Needs Node 20+ and npm; the network only for `npm ci` when node_modules is missing
# or older than package-lock.json. Extra arguments go to `node --test`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${PLINTH_BIN:-target/debug/plinth}
case $bin in /*) ;; *) bin="$root/$bin" ;; esac
[ -x "$bin" ] || { echo "typescript.sh: no server binary at $bin (cargo build, or set PLINTH_BIN)" >&2; exit 1; }
export PLINTH_BIN=$bin

cd clients/typescript
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --silent --no-audit --no-fund
fi
npm run --silent build

data=$(mktemp -d "${TMPDIR:-/tmp}/plinth-ts.XXXXXX")
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT

admin="plk_admin_$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# A random port; another one if it is taken.
for attempt in 1 2 3 4 5; do
  port=$(( 30000 + RANDOM % 20000 ))
  "$bin" serve --data-dir "$data" --listen "127.0.0.1:$port" --admin-key "$admin" > "$data/server.log" 2>&1 &
  server=$!
  base="http://127.0.0.1:$port"
  for _ in $(seq 200); do
    curl -sf --max-time 2 "$base/ready" >/dev/null && kill -0 "$server" 2>/dev/null && break 2
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=
  grep -q "Address already in use" "$data/server.log" && [ "$attempt" -lt 5 ] && continue
  echo "typescript.sh: the server did not start:" >&2
  cat "$data/server.log" >&2
  exit 1
done

status=0
PLINTH_URL=$base PLINTH_ADMIN_KEY=$admin node --test "$@" dist/test/*.test.js || status=$?
if [ "$status" -ne 0 ]; then
  echo "typescript.sh: tests failed; the server's log:" >&2
  tail -n 50 "$data/server.log" >&2
fi
exit "$status"
