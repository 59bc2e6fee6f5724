#!/usr/bin/env bash
# The LeanQuant types against llama.cpp's quantizer with and without an importance matrix, from the
# same source file and the same calibration text, every file scored by leanlm itself against the
# source's own distributions (`leanlm perplexity --kl-base`: llama.cpp cannot load the lq types, so
# one scorer reads every file). Bits per weight count the layer matrices (blk.*), not the token
# embedding and output matrix, which both tools keep at 6-8 bits.
#
#   bench/build_llamacpp.sh && bench/leanquant_vs_llamacpp.sh [MODEL] [CHUNKS] [CALIB_TOKENS]
#   (defaults: qwen2.5-coder-1.5b, 4 chunks of 512 tokens of data/hamlet.txt, 2048 tokens)
#
# Writes the markdown table to stdout and, with LEANQUANT_PLOT=FILE.png, a plot of KLD against bits
# per weight (matplotlib, installed into .venv when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL="${1:-qwen2.5-coder-1.5b}" CHUNKS="${2:-4}" CALIB_TOKENS="${3:-2048}"
BIN=build-llamacpp/bin
for t in llama-quantize llama-imatrix; do
  [ -x "$BIN/$t" ] || { echo "leanquant_vs_llamacpp.sh: $BIN/$t missing (bench/build_llamacpp.sh)" >&2; exit 1; }
done
SRC=$(build/leanlm list 2>/dev/null | awk -v m="$MODEL" '$1 == m && $4 == "yes" {getline; print $1}')
[ -n "$SRC" ] || SRC="$MODEL"
[ -f "$SRC" ] || { echo "leanquant_vs_llamacpp.sh: no model $MODEL (leanlm pull $MODEL)" >&2; exit 1; }
W=${LEANQUANT_WORK:-$(mktemp -d)}
[ -n "${LEANQUANT_WORK:-}" ] || trap 'rm -rf "$W"' EXIT
mkdir -p "$W"
# Calibration: the start of the Shakespeare corpus, which does not contain Hamlet (the scored text).
head -c 200000 data/shakespeare.txt > "$W/calib.txt"
TEXT=data/hamlet.txt
calib_chunks=$(( (CALIB_TOKENS + 511) / 512 ))
[ -f "$W/imatrix.dat" ] || "$BIN/llama-imatrix" -m "$SRC" -f "$W/calib.txt" -c 512 --chunks "$calib_chunks" -t 2 \
  -o "$W/imatrix.dat" >"$W/imatrix.log" 2>&1 || { tail -5 "$W/imatrix.log" >&2; exit 1; }

bpw() {  # bits per weight of the blk.* matrices: exact bytes from each tensor's type and shape
  build/leanlm info -m "$1" | awk '
    BEGIN { split("Q8_0 34 32 Q4_0 18 32 Q4_1 20 32 Q5_0 22 32 Q5_1 24 32 IQ4_NL 18 32 Q2_K 84 256 Q3_K 110 256 " \
                  "Q4_K 144 256 Q5_K 176 256 Q6_K 210 256 F16 2 1 BF16 2 1 F32 4 1 LQ2 9 32 LQ3 13 32 LQ4 17 32", f, " ")
            for (i = 1; i < length(f); i += 3) { bb[f[i]] = f[i + 1]; be[f[i]] = f[i + 2] }
            hdr["LQ2"] = 8; hdr["LQ3"] = 12; hdr["LQ4"] = 20 }
    $1 ~ /^blk\..*\.weight$/ && $3 ~ /^\[[0-9]+,$/ {
      n = $3; rows = $4; gsub(/[^0-9]/, "", n); gsub(/[^0-9]/, "", rows)
      if (!($2 in bb)) { print "bpw: unknown type " $2 > "/dev/stderr"; exit 1 }
      bytes += rows * (hdr[$2] + n / be[$2] * bb[$2]); elems += n * rows }
    END { if (elems == 0) exit 1; printf "%.3f", 8 * bytes / elems }'
}
score() {  # file -> "kld top1 ppl_ratio"
  build/leanlm perplexity -m "$1" --kl-base "$SRC" -f "$TEXT" -c 512 --chunks "$CHUNKS" -t 2 --json 2>"$W/ppl.err" |
    .venv/bin/python -c 'import json,sys; j=json.load(sys.stdin); print("%.4f %.2f %.4f" % (j["kld"], 100*j["top1"], j["ppl_ratio"]))'
}
declare -a ROWS=()
run() {  # method label file
  local s; s=$(score "$3")
  read -r k t r <<<"$s"
  local b; b=$(bpw "$3")
  ROWS+=("$1|$2|$b|$k|$t|$r")
  echo "| $1 | $2 | $b | $k | $t | $r |"
}
echo "source $SRC; calibration $CALIB_TOKENS tokens of data/shakespeare.txt; scored on $CHUNKS x 512 tokens of $TEXT"
echo
echo "| method | type | bits/weight (blk.*) | KLD | top-1 % | PPL ratio |"
echo "|---|---|---|---|---|---|"
for t in ${LEANQUANT_LQ_TYPES:-lq4 lq3 lq2}; do
  f="$W/leanlm-$t.gguf"
  [ -f "$f" ] || build/leanlm quantize -m "$SRC" -o "$f" --type "$t" --calib "$W/calib.txt" --tokens "$CALIB_TOKENS" -t 2 >/dev/null 2>"$W/q.err" ||
    { cat "$W/q.err" >&2; exit 1; }
  run "leanlm LeanQuant" "$t" "$f"
done
for t in ${LEANQUANT_LLAMA_TYPES:-Q4_K_M Q3_K_M Q3_K_S Q2_K}; do
  for im in no yes; do
    f="$W/llama-$t-$im.gguf"
    args=(--allow-requantize)
    [ "$im" = yes ] && args+=(--imatrix "$W/imatrix.dat")
    [ -f "$f" ] || "$BIN/llama-quantize" "${args[@]}" "$SRC" "$f" "$t" 2 >"$W/lq.log" 2>&1 || { tail -3 "$W/lq.log" >&2; continue; }
    run "llama.cpp$([ "$im" = yes ] && echo ' + imatrix')" "$t" "$f"
  done
done
if [ -n "${LEANQUANT_PLOT:-}" ]; then
  .venv/bin/python -c "import matplotlib" 2>/dev/null || .venv/bin/pip install -q matplotlib
  printf '%s\n' "${ROWS[@]}" | .venv/bin/python -c '
import sys, collections
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
lines = collections.defaultdict(list)
for row in sys.stdin:
    m, t, b, k, _, _ = row.strip().split("|")
    lines[m].append((float(b), float(k), t))
fig, ax = plt.subplots(figsize=(6.4, 4.2))
for m, pts in lines.items():
    pts.sort()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    for b, k, t in pts: ax.annotate(t, (b, k), textcoords="offset points", xytext=(4, 4), fontsize=7)
ax.set_xlabel("bits per weight (layer matrices)"); ax.set_ylabel("mean KL divergence to the source")
ax.set_yscale("log"); ax.grid(True, alpha=0.3); ax.legend(fontsize=8)
fig.tight_layout(); fig.savefig(sys.argv[1], dpi=120)
' "$LEANQUANT_PLOT"
  echo; echo "plot: $LEANQUANT_PLOT"
fi
