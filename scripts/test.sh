#!/usr/bin/env bash
# Sets up (idempotent), builds, and runs the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
ctest --test-dir build --output-on-failure --timeout 1200 "$@"
