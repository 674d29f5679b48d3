#!/usr/bin/env bash
# The queue's model test (queue/tests/model.rs), long (not run in CI):
# QUEUE_MODEL_JOBS jobs (default 5000) arriving over QUEUE_MODEL_SECONDS of
# chaos (default 600 = 10 minutes) for QUEUE_MODEL_WORKERS worker processes
# (default 8), paused past the visibility timeout, SIGKILLed and replaced,
# with Redis (appendonly yes, appendfsync always) restarted every 30 s,
# cleanly or SIGKILLed in turn. Everything runs on private ports (its own
# redis-server, never 6379).
#
# Prints one line starting "queue model:" with the seed and the counts; the
# run fails if any job ends in no place or two, on_dead is missed, or
# duplicate runs exceed reclaims. QUEUE_MODEL_SEED=<seed> replays a run's
# schedule and outcomes.
#
#   scripts/queue-model.sh                          # 10 minutes
#   QUEUE_MODEL_SECONDS=120 scripts/queue-model.sh  # a short run
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/supportrag-target}"
export QUEUE_MODEL_JOBS="${QUEUE_MODEL_JOBS:-5000}"
export QUEUE_MODEL_WORKERS="${QUEUE_MODEL_WORKERS:-8}"
export QUEUE_MODEL_SECONDS="${QUEUE_MODEL_SECONDS:-600}"
# cargo test, not nextest: nextest ends any test still running after 4
# minutes as hung (.config/nextest.toml).
exec cargo test -p supportrag-queue --test model -- --nocapture --exact \
  every_job_ends_done_or_dead_lettered_once_through_pauses_crashes_and_redis_restarts
