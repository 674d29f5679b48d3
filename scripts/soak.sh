#!/usr/bin/env bash
# Soak test (issue 5, item 7; not run in CI): steady signed load through the
# API for SOAK_SECS (default 600 = 10 minutes), two worker processes with one
# SIGKILLed and restarted every SOAK_KILL_EVERY_SECS (default 30), and Redis
# (appendonly yes, appendfsync always) SIGKILLed and restarted once half-way.
# Everything runs on private ports (its own redis-server, never 6379).
#
# Prints one line starting "SOAK RESULT:" with sent (202) = received distinct
# event ids, lost, and duplicates next to the jobs in flight at the kills; the
# run fails if anything accepted is lost or duplicates exceed that bound.
#
#   scripts/soak.sh                 # 10 minutes
#   SOAK_SECS=150 scripts/soak.sh   # a short run
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_SECS="${SOAK_SECS:-600}"
export SOAK_KILL_EVERY_SECS="${SOAK_KILL_EVERY_SECS:-30}"
# The worker binary must be built next to the test binary.
cargo build -p supportrag-worker --bin supportrag-worker
exec cargo nextest run -p supportrag-api --test api \
  --run-ignored only --no-capture \
  --final-status-level pass \
  -E 'test(soak_steady_load_with_worker_kills_and_a_redis_restart)'
