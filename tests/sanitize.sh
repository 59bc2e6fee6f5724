#!/usr/bin/env bash
# Builds the KV and attention tests under a sanitizer in their own tree and runs them.
#   tests/sanitize.sh thread|address SOURCE_DIR WORK_DIR
# thread: ThreadSanitizer (attention's tasks, the stores' observers and the server's engine loop run on several threads);
# address: AddressSanitizer with UndefinedBehaviorSanitizer.
set -euo pipefail
KIND="$1"; SRC="$2"; WORK="$3"
case "$KIND" in
  thread) SAN=thread ;;
  address) SAN=address,undefined ;;
  *) echo "sanitize.sh: unknown sanitizer $KIND (thread or address)" >&2; exit 2 ;;
esac
BUILD="$WORK/sanitize-$KIND"
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLEANLM_SANITIZE="$SAN" >/dev/null
fi
TESTS=(test_attention test_kv_store test_kv_codecs test_server)
# The kernel tests (every SIMD path against its reference; no threads), the quantizers and the GGUF
# reader and writer under ASan/UBSan only.
[ "$KIND" = address ] && TESTS+=(test_kernels test_kv_kernels test_quantize test_gguf test_leanquant)
cmake --build "$BUILD" --parallel "$(nproc)" --target "${TESTS[@]}" >/dev/null
export LEANLM_SOURCE_DIR="$SRC"  # test_server reads the installed SmolLM2
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
export ASAN_OPTIONS="detect_leaks=1 abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1"
for t in "${TESTS[@]}"; do
  echo "sanitize($KIND): $t"
  args=(--gtest_brief=1)
  # The server's threads meet in submit, cancel and stop; the two tests that mostly run the model
  # (minutes under TSan) add no threading the others lack.
  [ "$t" = test_server ] && args+=(--gtest_filter=-SchedulerTest.TightBudget*:SchedulerTest.Batched*:SchedulerTest.Preempted*)
  "$BUILD/tests/$t" "${args[@]}"
done
