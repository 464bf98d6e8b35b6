#!/usr/bin/env bash
# The whole test suite, after setting up .venv. HYPOTHESIS_PROFILE=ci (the default under CI) is
# derandomized with fixed example counts; HYPOTHESIS_PROFILE=thorough runs many more examples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
