#!/usr/bin/env bash
# The benchmark of issue 4 (docs/PERFORMANCE.md): builds in release, starts
# its own redis-server, and prints one table. Extra arguments go to `bench`
# (e.g. --runs 5, --no-bullmq, --only queue,delivery). About 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p supportrag-bench -p supportrag-worker -p supportrag-api
exec "$target/release/bench" "$@"
