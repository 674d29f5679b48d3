#!/usr/bin/env bash
# Starts the whole system locally: its own Redis (AOF in ./.data/redis), the
# API on 127.0.0.1:8000 and workers. Ctrl-C stops everything this script
# started.
#
#   WORKERS=2             worker processes to run
#   REDIS_PORT=6380       port of the Redis this script starts (or reuses, if
#                         it is the one it started before)
#   REDIS_URL=redis://…   use this existing Redis instead of starting one
#   SUPPORTRAG__…         any setting, as in config/default.toml
#
# The admin key is SUPPORTRAG__AUTH__ADMIN_KEYS when set, else a random key
# generated on the first run and kept in ./.data/admin-key; likewise the key
# that encrypts webhook secrets at rest (SUPPORTRAG__SECRETS__ENCRYPTION_KEYS,
# else ./.data/encryption-key).
set -euo pipefail
cd "$(dirname "$0")/.."

# Every missing prerequisite at once, with the one line that installs them:
# a fresh machine should not learn about them one failed step at a time.
missing=()
command -v cargo >/dev/null || { echo "start.sh: cargo not found; install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
command -v cc >/dev/null || missing+=(gcc)
if [ -z "${REDIS_URL:-}" ]; then
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
fi
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "start.sh: missing prerequisites; install them with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
if [ ! -f /usr/share/dictd/mueller7.index ]; then
  echo "start.sh: no RU<->EN dictionary; cross-language answers use the built-in glossary only (apt-get install -y mueller7-dict)" >&2
fi

WORKERS="${WORKERS:-2}"
REDIS_PORT="${REDIS_PORT:-6380}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/supportrag-target}"
# Loopback only: the admin key below is for local trials, not for a network.
export SUPPORTRAG__SERVER__BIND="${SUPPORTRAG__SERVER__BIND:-127.0.0.1:8000}"
export SUPPORTRAG__SECURITY__ALLOWED_CIDRS="${SUPPORTRAG__SECURITY__ALLOWED_CIDRS:-127.0.0.0/8,::1/128}"
export SUPPORTRAG__LOG__FORMAT="${SUPPORTRAG__LOG__FORMAT:-pretty}"

mkdir -p .data
if [ -z "${SUPPORTRAG__AUTH__ADMIN_KEYS:-}" ]; then
  if [ ! -s .data/admin-key ]; then
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > .data/admin-key)
  fi
  SUPPORTRAG__AUTH__ADMIN_KEYS="$(cat .data/admin-key)"
  export SUPPORTRAG__AUTH__ADMIN_KEYS
  key_hint='export KEY=$(cat .data/admin-key)'
else
  key_hint='the key(s) in SUPPORTRAG__AUTH__ADMIN_KEYS'
fi

# Webhook secrets are encrypted at rest locally too, under a key kept
# beside the admin key (losing it makes the stored secrets unreadable).
if [ -z "${SUPPORTRAG__SECRETS__ENCRYPTION_KEYS:-}" ]; then
  if [ ! -s .data/encryption-key ]; then
    (umask 077 && printf 'local1:%s' "$(head -c 32 /dev/urandom | base64)" > .data/encryption-key)
  fi
  SUPPORTRAG__SECRETS__ENCRYPTION_KEYS="$(cat .data/encryption-key)"
  export SUPPORTRAG__SECRETS__ENCRYPTION_KEYS
fi

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

if [ -n "${REDIS_URL:-}" ]; then
  export SUPPORTRAG__REDIS__URL="$REDIS_URL"
  echo "start.sh: using the Redis at $REDIS_URL (its persistence settings are its own)"
else
  export SUPPORTRAG__REDIS__URL="redis://127.0.0.1:$REDIS_PORT"
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    # Only the Redis this script started (AOF on, data in .data/redis) is
    # reused; anything else on the port would silently drop the guarantee
    # that what the API accepted survives a crash.
    dir="$(redis-cli -p "$REDIS_PORT" config get dir | sed -n 2p)"
    aof="$(redis-cli -p "$REDIS_PORT" config get appendonly | sed -n 2p)"
    if [ "$dir" != "$PWD/.data/redis" ] || [ "$aof" != "yes" ]; then
      echo "start.sh: port $REDIS_PORT is taken by another Redis (dir $dir, appendonly $aof)." >&2
      echo "  Use it anyway with REDIS_URL=redis://127.0.0.1:$REDIS_PORT, or pick a free REDIS_PORT." >&2
      exit 1
    fi
    echo "start.sh: reusing the Redis this script started earlier on port $REDIS_PORT"
  else
    mkdir -p .data/redis
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$PWD/.data/redis" \
      --appendonly yes --appendfsync always --save "" --daemonize no \
      --logfile "$PWD/.data/redis/redis.log" &
    pids+=($!)
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    echo "start.sh: started redis-server on port $REDIS_PORT (AOF in .data/redis)"
  fi
fi

cargo build --release --bin supportrag-api --bin supportrag-worker
bin="$CARGO_TARGET_DIR/release"

"$bin/supportrag-api" &
pids+=($!)
for n in $(seq "$WORKERS"); do
  HOSTNAME="worker$n" "$bin/supportrag-worker" &
  pids+=($!)
done
echo "start.sh: API on http://$SUPPORTRAG__SERVER__BIND, $WORKERS worker(s). Admin key: $key_hint. Ctrl-C stops all."
wait -n "${pids[@]}"
