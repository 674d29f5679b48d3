#!/usr/bin/env bash
# Starts the whole system locally: Redis (with AOF in ./.data/redis, only if
# nothing answers on the configured port), the API on :8000 and workers.
# Ctrl-C stops everything this script started.
#
#   WORKERS=2             worker processes to run
#   REDIS_PORT=6379       where to find or start Redis
#   SUPPORTRAG__…         any setting, as in config/default.toml
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS="${WORKERS:-2}"
REDIS_PORT="${REDIS_PORT:-6379}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/supportrag-target}"
export SUPPORTRAG__REDIS__URL="${SUPPORTRAG__REDIS__URL:-redis://127.0.0.1:$REDIS_PORT}"
# Local development: a known admin key and loopback receivers allowed.
export SUPPORTRAG__AUTH__ADMIN_KEYS="${SUPPORTRAG__AUTH__ADMIN_KEYS:-dev-admin-key-change-me}"
export SUPPORTRAG__SECURITY__ALLOWED_CIDRS="${SUPPORTRAG__SECURITY__ALLOWED_CIDRS:-127.0.0.0/8,::1/128}"
export SUPPORTRAG__LOG__FORMAT="${SUPPORTRAG__LOG__FORMAT:-pretty}"

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "start.sh: using the Redis already running on port $REDIS_PORT"
else
  if ! command -v redis-server >/dev/null; then
    echo "start.sh: redis-server not found (Debian: apt-get install -y redis-server)" >&2
    exit 1
  fi
  mkdir -p .data/redis
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$PWD/.data/redis" \
    --appendonly yes --appendfsync always --save "" --daemonize no \
    --logfile "$PWD/.data/redis/redis.log" &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "start.sh: started redis-server on port $REDIS_PORT (AOF in .data/redis)"
fi

cargo build --release --bin supportrag-api --bin supportrag-worker
bin="$CARGO_TARGET_DIR/release"

"$bin/supportrag-api" &
pids+=($!)
for n in $(seq "$WORKERS"); do
  HOSTNAME="worker$n" "$bin/supportrag-worker" &
  pids+=($!)
done
echo "start.sh: API on http://localhost:8000 (admin key: $SUPPORTRAG__AUTH__ADMIN_KEYS), $WORKERS worker(s). Ctrl-C stops all."
wait -n "${pids[@]}"
