#!/usr/bin/env bash
# Runs every test against SQLite and PostgreSQL.
# Starts a throwaway PostgreSQL cluster unless PLINTH_TEST_DATABASE_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PLINTH_TEST_DATABASE_URL:-}" ]; then
  source scripts/pg-start.sh
fi

# The official openai client, for the gateway's compatibility test, and moto's S3 server, for
# the file store's tests against a real S3 wire protocol.
if [ -z "${PLINTH_TEST_PYTHON:-}" ]; then
  if [ ! -x target/py-tests/bin/python ] || ! target/py-tests/bin/python -c 'import openai, moto.server' 2>/dev/null; then
    mkdir -p target
    python3 -m venv target/py-tests
    target/py-tests/bin/pip install --quiet --disable-pip-version-check "openai>=1.40" "moto[server]>=5.1"
  fi
  export PLINTH_TEST_PYTHON="$PWD/target/py-tests/bin/python"
fi

if [ -z "${PLINTH_TEST_S3_ENDPOINT:-}" ]; then
  source scripts/s3-start.sh
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

# With a filter, only the Rust tests it names.
if [ $# -gt 0 ]; then
  exit 0
fi

# The contract, checked by outside tools against the built server: schemathesis over every
# operation on both databases, then the TypeScript client's own tests.
bash scripts/schemathesis.sh sqlite --seed 1
bash scripts/schemathesis.sh postgres --seed 1
bash scripts/typescript.sh
