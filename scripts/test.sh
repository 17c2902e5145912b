#!/usr/bin/env bash
# Runs every test against SQLite and PostgreSQL.
# Starts a throwaway PostgreSQL cluster unless PLINTH_TEST_DATABASE_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PLINTH_TEST_DATABASE_URL:-}" ]; then
  source scripts/pg-start.sh
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
