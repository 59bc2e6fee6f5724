#!/usr/bin/env bash
# leanlm quantize against llama.cpp's llama-quantize from the same source file: both files scored by
# llama.cpp's llama-perplexity against the source's own logits (mean KL divergence, how often the
# top token is the same, perplexity), so the scoring is the same for both and llama.cpp loading
# leanlm's files is checked on the way. Needs bench/build_llamacpp.sh.
#
#   bench/quantize_vs_llamacpp.sh [MODEL.gguf] [TYPES] [CHUNKS]
#     defaults: the default model, "q8_0 q6_k q5_k q5_1 q4_k q4_0 q3_k q2_k", 8 chunks of 512 tokens
#     of data/hamlet.txt
# llama-quantize runs with --pure (one type for every matrix, as leanlm's --type) and the output
# matrix type leanlm chose, so the two files hold the same types tensor for tensor.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SRC="${1:-models/gemma-3-270m-q4_k_m.gguf}"
TYPES="${2:-q8_0 q6_k q5_k q5_1 q4_k q4_0 q3_k q2_k}"
CHUNKS="${3:-8}"
BIN=build-llamacpp/bin
for t in llama-quantize llama-perplexity; do
  [ -x "$BIN/$t" ] || { echo "quantize_vs_llamacpp.sh: $BIN/$t missing (bench/build_llamacpp.sh)" >&2; exit 1; }
done
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
TEXT=data/hamlet.txt
PPL=("$BIN/llama-perplexity" -f "$TEXT" -c 512 --chunks "$CHUNKS" -t 2 -b 512)
"${PPL[@]}" -m "$SRC" --kl-divergence-base "$TMP/base.kld" >"$TMP/base.log" 2>&1
score() {  # file -> "kld same_top ppl"
  "${PPL[@]}" -m "$1" --kl-divergence-base "$TMP/base.kld" --kl-divergence >"$TMP/s.log" 2>&1 || { tail -5 "$TMP/s.log" >&2; echo "failed - -"; return; }
  local kld same ppl
  kld=$(grep -E "^Mean +KLD:" "$TMP/s.log" | awk '{print $3}')
  same=$(grep -E "^Same top p:" "$TMP/s.log" | awk '{print $4}')
  ppl=$(grep -E "^Mean +PPL\(Q\)" "$TMP/s.log" | sed "s/.*: *//" | awk '{print $1}')
  echo "$kld $same $ppl"
}
mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN{printf "%.1f", b/1048576}'; }
echo "source $SRC: $(mib "$SRC") MiB; $CHUNKS chunks of 512 tokens of $TEXT; scored by llama-perplexity --kl-divergence"
echo
echo "| type | leanlm MiB | llama.cpp MiB | leanlm KLD | llama.cpp KLD | leanlm same top % | llama.cpp same top % | leanlm PPL | llama.cpp PPL |"
echo "|---|---|---|---|---|---|---|---|---|"
for t in $TYPES; do
  build/leanlm quantize -m "$SRC" -o "$TMP/l.gguf" --type "$t" >/dev/null 2>"$TMP/lq.err"
  # the output matrix type leanlm used (output.weight, else token_embd.weight), for llama-quantize
  out_type=$(.venv/bin/python - "$TMP/l.gguf" <<'PYEOF'
import sys, gguf
r = gguf.GGUFReader(sys.argv[1])
names = {t.name: t.tensor_type.name for t in r.tensors}
print(names.get("output.weight", names.get("token_embd.weight")).lower())
PYEOF
)
  "$BIN/llama-quantize" --allow-requantize --pure --output-tensor-type "$out_type" --token-embedding-type "$out_type" \
    "$SRC" "$TMP/c.gguf" "$(echo "$t" | tr a-z A-Z)" 2 >"$TMP/cq.log" 2>&1 || { tail -3 "$TMP/cq.log"; continue; }
  read -r lk ls lp <<<"$(score "$TMP/l.gguf")"
  read -r ck cs cp <<<"$(score "$TMP/c.gguf")"
  echo "| $t | $(mib "$TMP/l.gguf") | $(mib "$TMP/c.gguf") | $lk | $ck | $ls | $cs | $lp | $cp |"
done
