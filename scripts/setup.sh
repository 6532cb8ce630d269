#!/usr/bin/env bash
# Creates the project's virtual environment and installs what is missing.
# Safe to run again: pip skips what is already satisfied.
set -euo pipefail
venv="${1:-.venv}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup: creating $venv"
    python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
"$venv/bin/python" - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"setup: r1-factory needs Python 3.11, found {sys.version.split()[0]}")
PY

# torch first and exactly 2.13.0: that is the CPU build on this machine's disk.
# Any looser requirement lets pip pick a multi-GB CUDA build from PyPI.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]"

# The code sandbox (verifiers/code) runs untrusted programs under bubblewrap.
if ! command -v bwrap >/dev/null 2>&1; then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing bubblewrap for the code sandbox"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
    else
        echo "setup: bubblewrap is missing; the code sandbox will refuse to run code."
        echo "setup: install it with: sudo apt-get install -y bubblewrap"
    fi
fi
echo "setup: environment ready in $venv"
