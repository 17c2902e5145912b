#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the test suite and exports
# PLINTH_TEST_DATABASE_URL. Source it: the cluster stops when the shell exits.
# Installs PostgreSQL from Debian's packages when it is missing.
set -euo pipefail

pg_bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
    return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

bindir=$(pg_bindir || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "pg-start: PostgreSQL not found, installing it" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bindir=$(pg_bindir)
fi

pg_dir=$(mktemp -d /tmp/plinth-pg.XXXXXX)
pg_port=${PLINTH_TEST_PG_PORT:-$(( 20000 + RANDOM % 20000 ))}
run_as=()
if [ "$(id -u)" = "0" ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$pg_dir"
  run_as=(runuser -u postgres --)
fi

"${run_as[@]}" "$bindir/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
"${run_as[@]}" "$bindir/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w -t 60 \
  -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null || { cat "$pg_dir/log" >&2; exit 1; }

plinth_pg_stop() {
  "${run_as[@]}" "$bindir/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap plinth_pg_stop EXIT

export PLINTH_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
echo "pg-start: PostgreSQL running at $PLINTH_TEST_DATABASE_URL" >&2
