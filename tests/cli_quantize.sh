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

# Through the gguf package's reader (independent of leanlm's): a file's tensor count and types, its
# metadata keys, general.file_type, and every matrix of the first two layers decoded. For the source
# the decoded matrices are saved (SRC_NPZ); for an output, their error against the source's must be
# that of the type: at most BOUND (1.5 x the normalised errors measured on this model; a code in the
# wrong place gives errors near 1). Opening a file costs the reader ~8 s (262k vocabulary strings),
# so each file is opened once.
inspect() {  # file, npz to write (source) or read, bound (outputs)
  "$PY" - "$@" <<'PYEOF'
import sys, collections, numpy as np, gguf
from gguf import quants
path, npz = sys.argv[1], sys.argv[2]
r = gguf.GGUFReader(path)
types = collections.Counter(t.tensor_type.name for t in r.tensors)
keys = [k for k in r.fields if not k.startswith("GGUF.") and k != "general.file_type"]
ft = r.fields.get("general.file_type")
print(len(r.tensors), " ".join(f"{k}={v}" for k, v in sorted(types.items())))
print(" ".join(sorted(keys)))
print(int(ft.parts[ft.data[0]][0]) if ft else -1)
mats = {t.name: quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        for t in r.tensors if t.name.startswith(("blk.0.", "blk.1.")) and len(t.shape) == 2}
if len(sys.argv) < 4:
    np.savez(npz, **mats)
    sys.exit(0)
src = np.load(npz)
worst = max(float(((src[k] - y) ** 2).sum() / (src[k] ** 2).sum()) for k, y in mats.items())
print(f"{len(mats)} matrices, worst nmse {worst:.3g}")
sys.exit(0 if mats and worst <= float(sys.argv[3]) else 1)
PYEOF
}

src_ppl=$(ppl "$SRC")
inspect "$SRC" "$TMP/src.npz" >"$TMP/src.desc"
# type:bound (measured worst nmse over those 14 matrices: q8_0 2.0e-5, q6_k 1.9e-4, q5_k 1.4e-3,
# q5_1 1.3e-3, q5_0 2.1e-3, q4_k 5.8e-3, q4_1 5.7e-3, q4_0 9.9e-3, q3_k 2.5e-2, q2_k 8.1e-2, f16
# 4.3e-8, bf16 2.8e-6).
for spec in q8_0:3e-5 q6_k:2.8e-4 q5_k:2.1e-3 q5_1:2e-3 q5_0:3.2e-3 q4_k:8.7e-3 q4_1:8.5e-3 q4_0:1.5e-2 q3_k:3.8e-2 q2_k:1.2e-1 f16:6.5e-8 bf16:4.2e-6; do
  type=${spec%%:*} bound=${spec##*:}
  "$LEANLM" quantize -m "$SRC" -o "$TMP/$type.gguf" --type "$type" >"$TMP/out" 2>"$TMP/err"
  check "$type: exit 0" [ $? -eq 0 ]
  check "$type: no part file left" bash -c "! ls '$TMP/$type.gguf.part'* >/dev/null 2>&1"
  inspect "$TMP/$type.gguf" "$TMP/src.npz" "$bound" >"$TMP/$type.desc" 2>"$TMP/py.err"
  rc=$?
  check "$type: the gguf package reads it: same tensor count, same metadata keys" \
    bash -c "[ \"\$(head -1 '$TMP/src.desc' | cut -d' ' -f1)\" = \"\$(head -1 '$TMP/$type.desc' | cut -d' ' -f1)\" ] && [ \"\$(sed -n 2p '$TMP/src.desc')\" = \"\$(sed -n 2p '$TMP/$type.desc')\" ]"
  echo "     $type: $(head -1 "$TMP/$type.desc"), file_type $(sed -n 3p "$TMP/$type.desc"), $(tail -1 "$TMP/out")"
  check "$type: the gguf package decodes it within the type's error of the source ($(tail -1 "$TMP/$type.desc"); bound $bound)" [ $rc -eq 0 ]
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

"$LEANLM" quantize -m "$SRC" -o "$TMP/q3_k-1t.gguf" --type q3_k -t 1 >/dev/null 2>&1
"$LEANLM" quantize -m "$SRC" -o "$TMP/q3_k-3t.gguf" --type q3_k -t 3 >/dev/null 2>&1
check "the same bytes with 1 thread as with 3" cmp -s "$TMP/q3_k-1t.gguf" "$TMP/q3_k-3t.gguf"
check "the same bytes as the default thread count" cmp -s "$TMP/q3_k.gguf" "$TMP/q3_k-1t.gguf"

# LeanQuant (lq4): with calibration statistics from text disjoint from the evaluation text (the
# start of the complete works; Hamlet begins far later), GPTQ's feedback must beat plain k-means
# grids (measured, 4 chunks: 43.9 against 48.2, KLD 0.092 against 0.186; the source 40.4). The lq types are leanlm's own:
# the gguf package does not know them, so leanlm reads them back here.
head -c 200000 "$ROOT/data/shakespeare.txt" >"$TMP/calib.txt"
"$LEANLM" quantize -m "$SRC" -o "$TMP/lq4-plain.gguf" --type lq4 >/dev/null 2>&1
"$LEANLM" quantize -m "$SRC" -o "$TMP/lq4.gguf" --type lq4 --calib "$TMP/calib.txt" --tokens 1024 >/dev/null 2>"$TMP/lq.err"
check "lq4 --calib: statistics collected" grep -q "statistics of 72 matrix inputs from 1024 tokens" "$TMP/lq.err"
p_plain=$(ppl "$TMP/lq4-plain.gguf")
p_lq=$(ppl "$TMP/lq4.gguf")
echo "     lq4: perplexity $p_lq with calibration, $p_plain without (source $src_ppl)"
check "lq4: calibration lowers perplexity" "$PY" -c "import sys; sys.exit(not (0 < $p_lq < 0.95 * $p_plain))"
# perplexity --kl-base: the source against itself is KLD 0, top-1 100 %, ratio 1; lq4 against the
# source: the ratio is the two perplexities' quotient, and calibration lowers the KLD too.
klj() { "$LEANLM" perplexity -m "$1" --kl-base "$SRC" -f "$TEXT" -c 512 --chunks 4 --json 2>/dev/null; }
field() { "$PY" -c "import json,sys; print(json.load(open('$1'))['$2'])"; }
klj "$SRC" >"$TMP/kl-self.json"
check "--kl-base: the source against itself is KLD 0, top-1 1, ratio 1" "$PY" -c "
import json,sys; j=json.load(open('$TMP/kl-self.json'))
sys.exit(not (abs(j['kld']) < 1e-9 and j['top1'] == 1 and abs(j['ppl_ratio'] - 1) < 1e-12))"
klj "$TMP/lq4.gguf" >"$TMP/kl-lq4.json"
klj "$TMP/lq4-plain.gguf" >"$TMP/kl-plain.json"
k_lq=$(field "$TMP/kl-lq4.json" kld)
k_plain=$(field "$TMP/kl-plain.json" kld)
echo "     lq4: KLD $k_lq with calibration, $k_plain without"
check "--kl-base: ratio = perplexity / the source's, 0 < top-1 < 1" "$PY" -c "
import json,sys; j=json.load(open('$TMP/kl-lq4.json'))
sys.exit(not (abs(j['ppl_ratio'] - $p_lq / $src_ppl) < 1e-4 * j['ppl_ratio'] and 0 < j['top1'] < 1 and j['kld'] > 0))"
check "--kl-base: calibration lowers the KLD" "$PY" -c "import sys; sys.exit(not (0 < $k_lq < 0.9 * $k_plain))"
"$LEANLM" perplexity -m "$SRC" --kl-base "$ROOT/models/smollm2-135m-instruct-q4_1.gguf" -f "$TEXT" -c 512 --chunks 1 >"$TMP/out" 2>"$TMP/err"
check "--kl-base with another vocabulary: exit 1, one line" bash -c "[ $? -eq 1 ] && [ \$(wc -l <'$TMP/err') -eq 1 ] && grep -q 'another vocabulary' '$TMP/err'"
"$LEANLM" quantize -m "$SRC" -o "$TMP/lq4-1t.gguf" --type lq4 --calib "$TMP/calib.txt" --tokens 1024 -t 1 >/dev/null 2>&1
check "lq4 --calib: the same bytes with 1 thread" cmp -s "$TMP/lq4.gguf" "$TMP/lq4-1t.gguf"
"$LEANLM" quantize -m "$SRC" -o "$TMP/x.gguf" --type q4_k --calib "$TMP/calib.txt" >"$TMP/out" 2>"$TMP/err"
check "--calib with a type that does not use it: exit 1, one line" bash -c "[ $? -eq 1 ] && [ \$(wc -l <'$TMP/err') -eq 1 ] && grep -q 'is for the lq types' '$TMP/err' && [ ! -e '$TMP/x.gguf' ]"
"$LEANLM" quantize -m "$SRC" -o "$TMP/x.gguf" --type lq3 --calib "$TMP/no-such.txt" >"$TMP/out" 2>"$TMP/err"
check "--calib file missing: exit 1, nothing written" bash -c "[ $? -eq 1 ] && [ ! -e '$TMP/x.gguf' ]"

# A mix with a user override ahead of it: each matrix's type as the rules give it.
"$LEANLM" quantize -m "$SRC" -o "$TMP/mix.gguf" --type lq3_m --tensor-type blk.0.attn_v=q8_0 >/dev/null 2>"$TMP/err"
"$LEANLM" info -m "$TMP/mix.gguf" >"$TMP/mix.info"
check "lq3_m: attn_v, attn_output, ffn_down in LQ4, ffn_up in LQ3, the override first" bash -c "
  grep -q '^ *blk.1.attn_v.weight  *LQ4 ' '$TMP/mix.info' && grep -q '^ *blk.1.attn_output.weight  *LQ4 ' '$TMP/mix.info' &&
  grep -q '^ *blk.1.ffn_down.weight  *LQ4 ' '$TMP/mix.info' && grep -q '^ *blk.1.ffn_up.weight  *LQ3 ' '$TMP/mix.info' &&
  grep -q '^ *blk.0.attn_v.weight  *Q8_0 ' '$TMP/mix.info'"
"$LEANLM" quantize -m "$SRC" -o "$TMP/x.gguf" --type q8_0 --tensor-type attn_v >"$TMP/out" 2>"$TMP/err"
check "--tensor-type without =TYPE: exit 1, one line, nothing written" bash -c "[ $? -eq 1 ] && [ \$(wc -l <'$TMP/err') -eq 1 ] && grep -q 'expected NAME=TYPE' '$TMP/err' && [ ! -e '$TMP/x.gguf' ]"

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
  bash -c "[ \"\$(cat '$TMP/keep.gguf')\" = 'the previous file' ] && ! ls '$TMP/keep.gguf.part'* >/dev/null 2>&1"
cp "$TMP/q8_0.gguf" "$TMP/same.gguf"
"$LEANLM" quantize -m "$TMP/same.gguf" -o "$TMP/same.gguf" --type q4_0 >"$TMP/out" 2>"$TMP/err"
check "output = input: exit 1, the input untouched" bash -c "[ $? -eq 1 ] && grep -q 'would replace the input' '$TMP/err' && cmp -s '$TMP/same.gguf' '$TMP/q8_0.gguf'"

echo "$fails failed"
[ "$fails" -eq 0 ]
