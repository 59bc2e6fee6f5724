#!/usr/bin/env bash
# Builds the GGUF fuzz target with clang (libFuzzer, ASan, UBSan) and runs it briefly on seeds:
# the tiny fixture models' headers and small hand-made files.
#   tests/fuzz_gguf.sh SOURCE_DIR WORK_DIR [RUNS]
set -euo pipefail
SRC="$1"; WORK="$2"; RUNS="${3:-30000}"
CXX="$(command -v clang++-14 || command -v clang++ || true)"
if [ -z "$CXX" ]; then echo "fuzz_gguf: clang++ not found (scripts/setup.sh installs it)" >&2; exit 1; fi
mkdir -p "$WORK/corpus"
BIN="$WORK/fuzz_gguf"
if [ ! -x "$BIN" ] || [ "$SRC/tests/fuzz_gguf.cc" -nt "$BIN" ] || [ "$SRC/src/gguf/gguf.cc" -nt "$BIN" ]; then
  "$CXX" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$SRC/src" -I"$SRC/include" "$SRC/tests/fuzz_gguf.cc" "$SRC/src/gguf/gguf.cc" \
    "$SRC/src/quant/quant_types.cc" "$SRC/src/util/error.cc" -o "$BIN"
fi
# Seeds: every fixture model cut to its first 4 KiB (header, metadata, part of the tensor table).
for f in "$WORK"/*.gguf; do
  [ -e "$f" ] && head -c 4096 "$f" > "$WORK/corpus/$(basename "$f").head"
done
printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' > "$WORK/corpus/empty.gguf"
"$BIN" -runs="$RUNS" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$WORK/corpus" 2>&1 | tail -5
