#!/usr/bin/env bash
# CI: the fault tests (tests/reliability/, marker `reliability`, docs/guarantees.md) on
# PostgreSQL (database "test", made by scripts/ensure-services.sh), with a redis-server
# of this script's own on a spare port as the broker, stopped when the script ends. The
# broker-outage test starts and stops yet another one of its own; the machine's shared
# Redis is never used. Worker processes are started and killed by the tests themselves.
#
# Prints the measured figures at the end; they are also kept, one JSON object a line,
# in test-artifacts/reliability-figures.jsonl. About 5 minutes on 2 cores.
set -euo pipefail

cd "$(dirname "$0")/.."
started=$SECONDS

# Another database for a run beside CI (its test database is "test_" + its name).
PG_URL=${NOTIFY_TRACKING_RELIABILITY_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
FIGURES=test-artifacts/reliability-figures.jsonl
TIME_LIMIT=1200  # seconds; the run takes about 300

bash scripts/ensure-services.sh
make .venv/bin/.installed

port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
workdir=$(mktemp -d)
redis_pid=""
stop_redis() {
  if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
    kill "$redis_pid"
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap stop_redis EXIT

redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$workdir" \
  >"$workdir/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do
  [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
  sleep 0.2
done
[ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] || {
  echo "[reliability] ERROR: redis-server on port $port did not start" >&2
  cat "$workdir/redis.log" >&2
  exit 1
}
echo "[reliability] broker: redis-server on 127.0.0.1:$port (pid $redis_pid)"

mkdir -p "$(dirname "$FIGURES")"
rm -f "$FIGURES"
set +e
NOTIFY_TRACKING_TEST_DATABASE_URL="$PG_URL" \
NOTIFY_TRACKING_TEST_BROKER_URL="redis://127.0.0.1:$port/0" \
NOTIFY_TRACKING_TEST_FIGURES="$PWD/$FIGURES" \
  timeout --signal=INT --kill-after=60 "$TIME_LIMIT" \
  .venv/bin/python -m pytest -m reliability tests/reliability -p no:cacheprovider </dev/null
rc=$?
set -e

printf '\n===== reliability figures =====\n'
if [ -s "$FIGURES" ]; then
  .venv/bin/python -c '
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    record = json.loads(line)
    print("- " + record["name"] + ": " + record["line"])
' "$FIGURES"
fi
printf '===== reliability tests: %s in %ss =====\n' \
  "$([ "$rc" -eq 0 ] && echo passed || echo "FAILED (exit $rc)")" $((SECONDS - started))
exit "$rc"
