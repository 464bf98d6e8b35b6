#!/usr/bin/env bash
# Install what the JavaScript examples and their tests need; idempotent and quiet, fast when already done.
#   examples/node: onnxruntime-node (installed with --ignore-scripts: its postinstall downloads CUDA binaries and
#                  fails without network access; the CPU build it ships works without it)
#   examples/web:  onnxruntime-web (wasm) and playwright-core (drives the system's Chromium; downloads no browser)
#   Chromium:      Debian's `chromium` package when /usr/bin/chromium is missing (needs root / apt).
set -euo pipefail
cd "$(dirname "$0")/.."

for dir in examples/node examples/web; do
    stamp="$dir/node_modules/.diffspec-installed"
    if [[ -f "$stamp" && "$stamp" -nt "$dir/package.json" ]]; then
        continue
    fi
    (cd "$dir" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$stamp"
done

if [[ ! -x /usr/bin/chromium ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup-examples: /usr/bin/chromium is missing; install it with: sudo apt-get install -y chromium" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null
    }
fi
