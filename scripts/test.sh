#!/usr/bin/env bash
# The whole test suite, as README gives it and CI runs it.
#
# Tests start their own redis-server processes (random ports, temp dirs) and
# never touch a Redis already running on 6379. They need redis-server and
# node on PATH, and express for the seed's JavaScript verifier, which this
# script installs under ~/.cache/supportrag-node when missing. Then the API
# is fuzzed against its OpenAPI document with Schemathesis (a bounded run,
# scripts/schemathesis.sh), installed under ~/.cache/supportrag-py when
# missing. SKIP_SCHEMATHESIS=1 leaves that step out. The providers' signing
# libraries for the signature-profile tests (Standard Webhooks, Slack,
# Stripe, GitHub) are installed by scripts/signers.sh under
# ~/.cache/supportrag-signers. The real-dictionary
# test needs the Debian package mueller7-dict and skips without it (only a
# hint here: installing packages is CI's job, .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/supportrag-target}"
export SUPPORTRAG_SIGNERS="${SUPPORTRAG_SIGNERS:-$HOME/.cache/supportrag-signers}"
export SUPPORTRAG_NODE_MODULES="${SUPPORTRAG_NODE_MODULES:-$HOME/.cache/supportrag-node/node_modules}"

# Every missing prerequisite at once, before a long cargo run, with the one
# line that installs them.
missing=()
command -v cargo >/dev/null || { echo "test.sh: cargo not found; install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
command -v cc >/dev/null || missing+=(gcc)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
# The console's browser test (api/tests/api/console.rs) drives headless Chromium.
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# python3 with venv: the providers' signing libraries (scripts/signers.sh)
# and Schemathesis are installed into virtual environments.
command -v python3 >/dev/null || missing+=(python3)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: missing prerequisites; install them with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
if [ ! -f /usr/share/dictd/mueller7.index ]; then
  echo "test.sh: no RU<->EN dictionary; the real-dictionary test will skip (Debian: apt-get install -y mueller7-dict)" >&2
fi
if [ ! -d "$SUPPORTRAG_NODE_MODULES/express" ]; then
  npm install --no-audit --no-fund --silent --prefix "$(dirname "$SUPPORTRAG_NODE_MODULES")" express@4
fi

scripts/signers.sh

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

if [ -z "${SKIP_SCHEMATHESIS:-}" ]; then
  if ! command -v st >/dev/null && ! python3 -c 'import schemathesis' 2>/dev/null; then
    venv="$HOME/.cache/supportrag-py"
    [ -x "$venv/bin/st" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q 'schemathesis>=4,<5'; }
    export PATH="$venv/bin:$PATH"
  fi
  scripts/schemathesis.sh
fi
