#!/usr/bin/env bash
# Command 2 of the README: install, then run the whole test suite (what .ci/run calls).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
VENV="${SELFCORRECT_VENV:-$HOME/.cache/selfcorrect/venv}"
exec "$VENV/bin/python" -m pytest -ra "$@"
