#!/usr/bin/env bash
# Runs schemathesis (pinned) over every operation of the OpenAPI document, every check, against
# the server built from this tree: on a fresh embedded database, or on PostgreSQL with
#   scripts/schemathesis.sh postgres      (PLINTH_TEST_DATABASE_URL, or a throwaway cluster)
# Extra arguments go to `st run` (`-n 50`, `--include-path ...`).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
[ $# -gt 0 ] && shift

venv=target/py-tests
if [ ! -x "$venv/bin/st" ] || ! "$venv/bin/st" --version | grep -q "4.32.5"; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi

cargo build --quiet --bin plinth
data=$(mktemp -d /tmp/plinth-st.XXXXXX)
port=$(( 30000 + RANDOM % 20000 ))
admin="plk_admin_$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
args=(--data-dir "$data" --listen "127.0.0.1:$port" --admin-key "$admin")
if [ "$backend" = postgres ]; then
  if [ -z "${PLINTH_TEST_DATABASE_URL:-}" ]; then
    source scripts/pg-start.sh
  fi
  name="st_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  psql "$PLINTH_TEST_DATABASE_URL" -qc "CREATE DATABASE $name"
  args+=(--database-url "${PLINTH_TEST_DATABASE_URL%/*}/$name")
fi
# A local AI provider speaking OpenAI's and Anthropic's wire formats, as the server's upstreams.
"$venv/bin/python" tests/fake_ai_upstream.py "$data/ai.port" &
upstream=$!
trap 'kill $upstream 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do [ -s "$data/ai.port" ] && break; sleep 0.1; done
ai="http://127.0.0.1:$(cat "$data/ai.port")"
# The platform webhooks answer 503 until their secrets are set: set, they are tested for real.
META_APP_SECRET=st-meta-secret META_WEBHOOK_VERIFY_TOKEN=st-meta-token PLINTH_STRIPE_WEBHOOK_SECRET=whsec_st \
  PLINTH_OPENAI_BASE_URL="$ai/v1" PLINTH_ANTHROPIC_BASE_URL="$ai" PLINTH_OPENROUTER_BASE_URL="$ai/api/v1" \
  target/debug/plinth serve "${args[@]}" > "$data/server.log" 2>&1 &
server=$!
trap 'kill $server $upstream 2>/dev/null || true; rm -rf "$data"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf "$base/ready" >/dev/null && break; sleep 0.1; done

# A tenant on the largest tier (its rate limit does not stop the run) and its key of every scope.
key=$(curl -sf -X POST "$base/v1/tenants" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name": "Schemathesis", "tier": "enterprise"}' | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["data"]["api_key"])')
# Its OpenAI credentials, for the local provider: the AI routes answer for real.
curl -sf -X PUT "$base/v1/credentials/openai" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d '{"api_key": "sk-schemathesis-0000"}' > /dev/null

# One worker: with two threads, Python 3.11's `ast.parse` (hypothesis describing a filter) can
# fail with "AST constructor recursion depth mismatch", a race in the interpreter, not a finding.
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=tests \
  "$venv/bin/st" --config-file tests/schemathesis.toml run "$base/docs/openapi.json" \
  --checks all --header "Authorization: Bearer $key" --workers 1 --max-time 150 "$@"
