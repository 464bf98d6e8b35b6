#!/usr/bin/env bash
# Lint, format check and type check, as CI runs them before the tests (after scripts/setup.sh).
# mypy sees the four parts under their import names through a tree of links in .mypy-src/ (the folders are
# mapped into the `diffspec` namespace by setuptools, which mypy cannot follow in an editable install).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
rm -rf .mypy-src && mkdir -p .mypy-src/diffspec
for part in reference trainer export runtime conformance; do
  ln -s "../../$part" ".mypy-src/diffspec/$part"
done
MYPYPATH=.mypy-src .venv/bin/python -m mypy -p diffspec
