#!/usr/bin/env bash
# The whole test suite, after setting up .venv. HYPOTHESIS_PROFILE=ci (the default under CI) is
# derandomized with fixed example counts; HYPOTHESIS_PROFILE=thorough runs many more examples.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # torch and onnxruntime in parallel test processes: one thread each
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
# Two processes on a 2-core machine (pytest-xdist); PYTEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${PYTEST_WORKERS:-auto}" --dist loadgroup tests "$@"
