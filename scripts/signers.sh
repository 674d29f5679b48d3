#!/usr/bin/env bash
# The providers' own signing libraries, for the signature-profile tests
# (api/tests/api/signature_profiles.rs): each provider's official package signs
# the requests the API must accept. Pinned; installed once under
# $SUPPORTRAG_SIGNERS (default ~/.cache/supportrag-signers, outside git):
#   py/            a venv with standardwebhooks and slack_sdk (PyPI)
#   node_modules/  stripe and @octokit/webhooks-methods (npm)
# Reinstalls when the pins below change (recorded in .pins).
set -euo pipefail

PY_PINS="standardwebhooks==1.1.0 slack_sdk==3.48.0"
NPM_PINS="stripe@18.5.0 @octokit/webhooks-methods@6.0.0"

dir="${SUPPORTRAG_SIGNERS:-$HOME/.cache/supportrag-signers}"
pins="$PY_PINS $NPM_PINS"
if [ "$(cat "$dir/.pins" 2>/dev/null)" = "$pins" ]; then
  exit 0
fi
for tool in python3 node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "signers.sh: $tool is required (Debian: apt-get install -y python3-venv nodejs npm)" >&2
    exit 1
  fi
done
mkdir -p "$dir"
[ -x "$dir/py/bin/python" ] || python3 -m venv "$dir/py"
# shellcheck disable=SC2086 # the pins are separate words
"$dir/py/bin/pip" install -q $PY_PINS
# shellcheck disable=SC2086
npm install --no-audit --no-fund --silent --prefix "$dir" $NPM_PINS
echo "$pins" >"$dir/.pins"
