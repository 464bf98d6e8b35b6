#!/usr/bin/env bash
# The reference's tests in an environment with numpy (and the test tools) but no torch, diffusers or onnx:
# proves that `diffspec.reference` needs nothing else. Makes .venv-numpy/ in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-numpy/bin/python ]; then
  "$PY" -m venv .venv-numpy
fi
.venv-numpy/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv-numpy/bin/python -m pip install -q numpy scipy "pytest>=8" "hypothesis>=6.100"
.venv-numpy/bin/python -m pip install -q --no-deps -e .
if .venv-numpy/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "test-numpy-only: torch is importable in .venv-numpy; this job must run without it" >&2
  exit 1
fi
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
exec .venv-numpy/bin/python -m pytest -q -p no:cacheprovider tests/reference "$@"
