#!/usr/bin/env bash
# Decode (tg128) and prompt (pp512) speed of quantized files at 1 and 2 threads: leanlm on every file
# (lq types included), llama.cpp's llama-bench on the files it can read, with the bytes-per-step
# ceiling (weight bytes per token / read bandwidth measured in the same leanlm process).
#
#   bench/leanquant_speed.sh FILE...      (files named leanlm-*.gguf are run by leanlm only)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LB=build-llamacpp/bin/llama-bench
REPS=${REPS:-3}
echo "| file | engine | threads | weights MiB/token | pp512 tok/s | tg128 tok/s | tg share of ceiling |"
echo "|---|---|---|---|---|---|---|"
for f in "$@"; do
  for t in 1 2; do
    build/leanlm bench -m "$f" -t "$t" -p 512 -n 128 -r "$REPS" --bandwidth --json 2>/dev/null | .venv/bin/python -c '
import json, sys, os
j = json.load(sys.stdin); r = {x["test"]: x["tokens_per_second"] for x in j["results"]}
b = j["weight_bytes_per_token"]; bw = j["read_bandwidth_gbs"] * 1e9
print("| %s | leanlm | %d | %.1f | %.1f | %.2f | %.0f %% (ceiling %.1f tok/s at %.1f GB/s) |" % (os.path.basename(sys.argv[1]), j["threads"], b / 2**20,
      r["pp512"], r["tg128"], 100 * r["tg128"] * b / bw, bw / b, bw / 1e9))' "$f"
    case "$(basename "$f")" in leanlm-*) continue ;; esac
    [ -x "$LB" ] || continue
    "$LB" -m "$f" -t "$t" -p 512 -n 128 -r "$REPS" -o json 2>/dev/null | .venv/bin/python -c '
import json, sys, os
r = {("pp" if x["n_prompt"] else "tg"): x["avg_ts"] for x in json.load(sys.stdin)}
print("| %s | llama.cpp | %s | | %.1f | %.2f | |" % (os.path.basename(sys.argv[1]), sys.argv[2], r["pp"], r["tg"]))' "$f" "$t"
  done
done
