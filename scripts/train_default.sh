#!/usr/bin/env bash
# Command 1 of the README: install, then train the default policy and print a before/after table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
VENV="${SELFCORRECT_VENV:-$HOME/.cache/selfcorrect/venv}"
exec "$VENV/bin/selfcorrect" train --config configs/default.yaml "$@"
