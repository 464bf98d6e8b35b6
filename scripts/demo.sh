#!/usr/bin/env bash
# The main job: train a small model on scikit-learn's digits, export it to ONNX, sample a grid with the
# torch-free runtime, and print where the picture is and a quality figure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
