#!/usr/bin/env bash
# Creates .venv in the checkout and installs diffspec with everything the demo and the tests need.
# DIFFSPEC_TORCH: the pip requirement for torch (default: the CPU build torch==2.13.0);
# DIFFSPEC_TORCH_INDEX: an extra index URL for it (e.g. a CUDA wheel index).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if [ -n "${DIFFSPEC_TORCH_INDEX:-}" ]; then
    .venv/bin/python -m pip install -q "${DIFFSPEC_TORCH:-torch==2.13.0}" --extra-index-url "$DIFFSPEC_TORCH_INDEX"
  else
    .venv/bin/python -m pip install -q "${DIFFSPEC_TORCH:-torch==2.13.0}"
  fi
fi
.venv/bin/python -m pip install -q -e ".[dev]"
# k-diffusion, compared with in the tests, without its heavy requirements (only k_diffusion/sampling.py is used)
if ! .venv/bin/python -m pip show -q k-diffusion >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q --no-deps "k-diffusion==0.1.1.post1"
fi
