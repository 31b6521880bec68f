#!/usr/bin/env bash
# Runs the benchmark (see bench.py). Needs qemu-utils, e2fsprogs, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/bench.py "$@"
