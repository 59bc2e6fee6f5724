#!/usr/bin/env bash
# Bad input to the CLI: each case must print one "error: ..." line and exit with status 1.
set -u
LEANLM="$1"
ROOT="$2"
MODEL="$ROOT/models/gemma-3-270m-q4_k_m.gguf"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
cases=0
expect_error() {  # name, expected substring, command...
  local name="$1" want="$2"
  shift 2
  cases=$((cases + 1))
  "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  local lines
  lines=$(grep -c . "$TMP/err")
  if [ "$rc" -ne 1 ] || [ "$lines" -ne 1 ] || ! grep -q "^error: .*$want" "$TMP/err"; then
    echo "FAIL $name: rc=$rc, stderr:"; cat "$TMP/err"; fails=$((fails + 1))
  else
    echo "ok   $name: $(cat "$TMP/err")"
  fi
}
head -c 1000000 "$MODEL" > "$TMP/cut1.gguf"
head -c 100 "$MODEL" > "$TMP/cut2.gguf"
printf 'not a model at all' > "$TMP/text.gguf"
"$ROOT/.venv/bin/python" - "$TMP/unknown-arch.gguf" <<'PY'
import sys, numpy as np, gguf
w = gguf.GGUFWriter(sys.argv[1], "mamba9")
w.add_block_count(1)
w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
PY
expect_error "missing model" "cannot open" "$LEANLM" run -m "$TMP/nope.gguf" -p hi
expect_error "truncated model" "truncated" "$LEANLM" run -m "$TMP/cut1.gguf" -p hi
expect_error "header-only model" "truncated" "$LEANLM" info -m "$TMP/cut2.gguf"
expect_error "not a GGUF" "bad magic" "$LEANLM" run -m "$TMP/text.gguf" -p hi
expect_error "unsupported architecture" "unsupported architecture 'mamba9'" "$LEANLM" run -m "$TMP/unknown-arch.gguf" -p hi
expect_error "unknown kernel set" "LEANLM_ISA=avx3 is not scalar, avx2 or avx512" env LEANLM_ISA=avx3 "$LEANLM" run -m "$MODEL" -p hi
expect_error "prompt longer than context" "prompt too long" "$LEANLM" run -m "$MODEL" -c 16 -p "$(printf 'word %.0s' {1..40})"
expect_error "negative --kv-topk" "kv-topk: Value -1 not in range" "$LEANLM" run -m "$MODEL" --kv-topk -1 -p hi
expect_error "--kv-topk not a number" "kv-topk: Value abc not in range" "$LEANLM" run -m "$MODEL" --kv-topk abc -p hi
expect_error "--kv-topk a fraction" "kv-topk: Value 2.5 not in range" "$LEANLM" run -m "$MODEL" --kv-topk 2.5 -p hi
expect_error "unknown flag" "not expected: --no-such-flag" "$LEANLM" run -m "$MODEL" --no-such-flag -p hi
expect_error "--kv-topk with eviction" "does not combine with eviction or --kv-think" "$LEANLM" run -m "$MODEL" --kv-topk 256 --kv-evict h2o --kv-budget 50% -p hi
expect_error "--kv-topk with ThinK" "does not combine with eviction or --kv-think" "$LEANLM" run -m "$MODEL" --kv-topk 256 --kv-think 0.5 -p hi
expect_error "eval with a negative top-k" "'-3' is not a slot count" "$LEANLM" eval -m "$MODEL" -f "$ROOT/data/hamlet.txt" --kv-topk 64,-3
expect_error "eval with a top-k that is not a number" "'x' is not a slot count" "$LEANLM" eval -m "$MODEL" -f "$ROOT/data/hamlet.txt" --kv-topk 64,x
expect_error "bad KV type" "unknown KV codec" "$LEANLM" run -m "$MODEL" --kv-codec q9 -p hi
expect_error "bad codec parameter" "unknown parameter 'x'" "$LEANLM" run -m "$MODEL" --kv-codec kivi2:x=3 -p hi
expect_error "eviction without budget" "needs --kv-budget" "$LEANLM" run -m "$MODEL" --kv-evict h2o -p hi
expect_error "budget without eviction" "needs an eviction policy" "$LEANLM" run -m "$MODEL" --kv-budget 20% -p hi
expect_error "bad budget" "percentage" "$LEANLM" run -m "$MODEL" --kv-evict h2o --kv-budget 150% -p hi
expect_error "CQ without codebooks" "needs codebooks" "$LEANLM" run -m "$MODEL" --kv-codec cq-4c8b -p hi
printf 'LLMCQ\0\0\1garbage-garbage-garbage-garbage-garbage' > "$TMP/other.cq"
expect_error "codebooks of another model" "different model" "$LEANLM" run -m "$MODEL" --kv-codec cq-4c8b --kv-codebooks "$TMP/other.cq" -p hi
expect_error "not a codebook file" "not a leanlm codebook file" "$LEANLM" run -m "$MODEL" --kv-codec cq-4c8b --kv-codebooks "$TMP/text.gguf" -p hi
expect_error "calibrate a codec without codebooks" "and PQ (pq) codecs have codebooks to learn" "$LEANLM" calibrate -m "$MODEL" -f "$ROOT/data/hamlet.txt" --out "$TMP/x.cq" --kv-codec kivi2
expect_error "eval with a bad list" "empty item" "$LEANLM" eval -m "$MODEL" -f "$ROOT/data/hamlet.txt" --kv-codec f16,,kivi2
expect_error "missing text file" "cannot open" "$LEANLM" perplexity -m "$MODEL" -f "$TMP/none.txt"
expect_error "ThinK that prunes nothing" "prunes no channel" "$LEANLM" run -m "$MODEL" --kv-think 0.05 -p hi
expect_error "eval with a bad ThinK list" "not a fraction" "$LEANLM" eval -m "$MODEL" -f "$ROOT/data/hamlet.txt" --kv-think 0,1.5
expect_error "f16 cache over --kv-mem" "memory budget" "$LEANLM" run -m "$MODEL" --kv-mem 0.01 -p hi
expect_error "kivi2 cache over --kv-mem" "memory budget" "$LEANLM" run -m "$MODEL" --kv-codec kivi2 --kv-mem 4 -c 4096 -p "$(printf 'word %.0s' {1..600})"
# chat talks on stderr (its header) before the error, so it is checked apart: exit 1 and the error.
printf 'hello there, how are you today\nand again a longer question about the weather\n' |
  "$LEANLM" chat -m "$MODEL" -c 32 -n 4 >"$TMP/out" 2>"$TMP/err"; rc=$?
cases=$((cases + 1))
if [ "$rc" -ne 1 ] || ! grep -q "^error: .*no longer fits" "$TMP/err"; then
  echo "FAIL chat past its context: rc=$rc"; cat "$TMP/err"; fails=$((fails + 1))
else
  echo "ok   chat past its context: $(grep '^error' "$TMP/err")"
fi
expect_error "scissorhands heads= value" "heads=any or heads=mean" "$LEANLM" run -m "$MODEL" --kv-codec q8_0 --kv-evict scissorhands:heads=all --kv-budget 10 -p hi
echo "$((cases - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
