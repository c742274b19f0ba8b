#!/usr/bin/env bash
# Creates bench/.venv and installs the pinned comparators (PyTorch, RecBole) from PyPI.
# Usage: bash bench/setup.sh [python-interpreter]   (default: python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${1:-python3}"
"$python" -m venv "$here/.venv"
"$here/.venv/bin/python" -m pip install --upgrade pip
"$here/.venv/bin/python" -m pip install -r "$here/requirements.txt"
"$here/.venv/bin/python" -c 'import torch, recbole; print("torch", torch.__version__, "recbole", recbole.__version__)'
