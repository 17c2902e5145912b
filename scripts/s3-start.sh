#!/usr/bin/env bash
# Starts a throwaway S3-compatible server (moto's, from PyPI) for the file store's tests and
# exports PLINTH_TEST_S3_ENDPOINT with the AWS_* settings the server's S3 client reads. Source it
# after the Python clients are installed: the server stops when the shell exits.
set -euo pipefail

s3_python=${PLINTH_TEST_PYTHON:?set PLINTH_TEST_PYTHON to a Python with moto[server]}
s3_port=${PLINTH_TEST_S3_PORT:-$(( 40000 + RANDOM % 10000 ))}
s3_log=$(mktemp /tmp/plinth-s3.XXXXXX.log)
"$s3_python" -m moto.server -H 127.0.0.1 -p "$s3_port" >"$s3_log" 2>&1 &
s3_pid=$!

plinth_s3_stop() {
  kill "$s3_pid" 2>/dev/null || true
  rm -f "$s3_log"
}
if declare -F plinth_pg_stop >/dev/null; then
  trap 'plinth_s3_stop; plinth_pg_stop' EXIT
else
  trap plinth_s3_stop EXIT
fi

for _ in $(seq 1 100); do
  if curl -s -o /dev/null "http://127.0.0.1:$s3_port/"; then
    break
  fi
  if ! kill -0 "$s3_pid" 2>/dev/null; then
    cat "$s3_log" >&2
    echo "s3-start: the S3 server did not start" >&2
    exit 1
  fi
  sleep 0.2
done

export PLINTH_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
export AWS_ENDPOINT_URL="$PLINTH_TEST_S3_ENDPOINT"
export AWS_ACCESS_KEY_ID=plinth-test
export AWS_SECRET_ACCESS_KEY=plinth-test-secret
export AWS_REGION=us-east-1
