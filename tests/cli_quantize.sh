#!/usr/bin/env bash
# leanlm quantize on the default model: the files it writes are GGUF that an independent reader
# (the Python package gguf) parses with the source's metadata and tensors, that leanlm loads with
# perplexity close to the source's, the same bytes whatever the thread count; bad input is one
# error line, status 1, and leaves nothing behind (nor touches a file already at the output path).
set -u
LEANLM="$1"
ROOT="$2"
PY="$ROOT/.venv/bin/python"
SRC="$ROOT/models/gemma-3-270m-q4_k_m.gguf"
TEXT="$ROOT/data/hamlet.txt"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
check() {  # name, condition (as a command)
  local name="$1"
  shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}
for need in "$PY" "$SRC" "$TEXT"; do
  [ -e "$need" ] || { echo "FAIL missing $need (scripts/setup.sh installs it)"; exit 1; }
done
ppl() { "$LEANLM" perplexity -m "$1" -f "$TEXT" -c 512 --chunks 4 --json 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ppl"])'; }

# The tensors' types and the metadata of a file, through the gguf package's reader.
describe() {
  "$PY" - "$1" <<'PYEOF'
import sys, collections, gguf
r = gguf.GGUFReader(sys.argv[1])
types = collections.Counter(t.tensor_type.name for t in r.tensors)
keys = [k for k in r.fields if not k.startswith("GGUF.")]
print(len(r.tensors), " ".join(f"{k}={v}" for k, v in sorted(types.items())))
print(" ".join(sorted(k for k in keys if k != "general.file_type")))
ft = r.fields.get("general.file_type")
print(int(ft.parts[ft.data[0]][0]) if ft else -1)
PYEOF
}

src_ppl=$(ppl "$SRC")
describe "$SRC" >"$TMP/src.desc"
for type in q8_0 q4_k q6_k q5_1; do
  "$LEANLM" quantize -m "$SRC" -o "$TMP/$type.gguf" --type "$type" >"$TMP/out" 2>"$TMP/err"
  check "$type: exit 0" [ $? -eq 0 ]
  check "$type: no part file left" [ ! -e "$TMP/$type.gguf.part" ]
  describe "$TMP/$type.gguf" >"$TMP/$type.desc" 2>"$TMP/py.err"
  check "$type: the gguf package reads it: same tensor count, same metadata keys" \
    bash -c "[ \"\$(head -1 '$TMP/src.desc' | cut -d' ' -f1)\" = \"\$(head -1 '$TMP/$type.desc' | cut -d' ' -f1)\" ] && [ \"\$(sed -n 2p '$TMP/src.desc')\" = \"\$(sed -n 2p '$TMP/$type.desc')\" ]"
  echo "     $type: $(head -1 "$TMP/$type.desc"), file_type $(sed -n 3p "$TMP/$type.desc"), $(tail -1 "$TMP/out")"
done
check "q8_0: matrices Q8_0, norms F32" bash -c "head -1 '$TMP/q8_0.desc' | grep -q '^236 F32=[0-9]* Q8_0=[0-9]*$'"
check "q8_0: general.file_type 7" [ "$(sed -n 3p "$TMP/q8_0.desc")" = 7 ]
# Gemma's 640-wide rows are not whole 256-blocks: those matrices take Q5_0 under q4_k, Q8_0 under
# q6_k; the token embedding (the tied output matrix) keeps at least Q6_K, here Q8_0.
check "q4_k: Q4_K where rows allow, Q5_0 elsewhere, the output matrix Q8_0" bash -c "head -1 '$TMP/q4_k.desc' | grep -q '^236 F32=[0-9]* Q4_K=[0-9]* Q5_0=[0-9]* Q8_0=1$'"
check "q6_k: Q6_K where rows allow, Q8_0 elsewhere" bash -c "head -1 '$TMP/q6_k.desc' | grep -q '^236 F32=[0-9]* Q6_K=[0-9]* Q8_0=[0-9]*$'"

# Quality: perplexity on 4 chunks of 512 against the source's (measured: q8_0 0.998x, q6_k 1.001x,
# q5_1 1.023x, q4_k 1.016x; Q8_0 and Q6_K hold a Q4_K_M source's weights nearly exactly).
for spec in q8_0:1.01 q6_k:1.01 q5_1:1.04 q4_k:1.04; do
  type=${spec%%:*} bound=${spec##*:}
  p=$(ppl "$TMP/$type.gguf")
  echo "     $type: perplexity $p (source $src_ppl)"
  check "$type: perplexity within ${bound}x of the source's" "$PY" -c "import sys; sys.exit(not (0 < $p <= $bound * $src_ppl))"
done

"$LEANLM" quantize -m "$SRC" -o "$TMP/q4_k-1t.gguf" --type q4_k -t 1 >/dev/null 2>&1
check "the same bytes with 1 thread as with the default" cmp -s "$TMP/q4_k.gguf" "$TMP/q4_k-1t.gguf"

# Bad input.
"$LEANLM" quantize -m "$SRC" -o "$TMP/x.gguf" --type q3_q >"$TMP/out" 2>"$TMP/err"
check "unknown type: exit 1, one line naming the types" bash -c "[ $? -eq 1 ] && [ \$(wc -l <'$TMP/err') -eq 1 ] && grep -q \"^error: unknown weight type 'q3_q' (types: f32, f16, bf16, q8_0\" '$TMP/err'"
check "unknown type: nothing written" [ ! -e "$TMP/x.gguf" ]
"$LEANLM" quantize -m "$SRC" --type q8_0 >"$TMP/out" 2>"$TMP/err"
check "no -o: exit 1" [ $? -eq 1 ]
"$LEANLM" quantize -m "$SRC" -o "$TMP/no-such-dir/x.gguf" --type q8_0 >"$TMP/out" 2>"$TMP/err"
check "unwritable output: exit 1, one line naming it" bash -c "[ $? -eq 1 ] && [ \$(wc -l <'$TMP/err') -eq 1 ] && grep -q '^error: $TMP/no-such-dir/x.gguf: cannot write' '$TMP/err'"
head -c 100000000 "$SRC" >"$TMP/truncated.gguf"
echo "the previous file" >"$TMP/keep.gguf"
"$LEANLM" quantize -m "$TMP/truncated.gguf" -o "$TMP/keep.gguf" --type q8_0 >"$TMP/out" 2>"$TMP/err"
check "truncated input: exit 1, one line naming the input" bash -c "[ $? -eq 1 ] && [ \$(wc -l <'$TMP/err') -eq 1 ] && grep -q '^error: $TMP/truncated.gguf: ' '$TMP/err'"
check "truncated input: the file at the output path is untouched, no part file" \
  bash -c "[ \"\$(cat '$TMP/keep.gguf')\" = 'the previous file' ] && [ ! -e '$TMP/keep.gguf.part' ]"
cp "$TMP/q8_0.gguf" "$TMP/same.gguf"
"$LEANLM" quantize -m "$TMP/same.gguf" -o "$TMP/same.gguf" --type q4_0 >"$TMP/out" 2>"$TMP/err"
check "output = input: exit 1, the input untouched" bash -c "[ $? -eq 1 ] && grep -q 'would replace the input' '$TMP/err' && cmp -s '$TMP/same.gguf' '$TMP/q8_0.gguf'"

echo "$fails failed"
[ "$fails" -eq 0 ]
