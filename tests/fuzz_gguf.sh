#!/usr/bin/env bash
# Builds the GGUF fuzz target with clang (libFuzzer, ASan, UBSan) and runs it briefly. Seeds are
# small complete GGUF files from tests/fuzz_gguf_seeds.py: they parse, so mutations reach the
# metadata accessors, the tensor checks and the loader's metadata consumers, not only the parser's
# error paths. The fixture models in WORK_DIR (too big to mutate well) are each run once.
#   tests/fuzz_gguf.sh SOURCE_DIR WORK_DIR [RUNS]
set -euo pipefail
SRC="$1"; WORK="$2"; RUNS="${3:-30000}"
CXX="$(command -v clang++-14 || command -v clang++ || true)"
if [ -z "$CXX" ]; then echo "fuzz_gguf: clang++ not found (scripts/setup.sh installs it)" >&2; exit 1; fi
mkdir -p "$WORK"
BIN="$WORK/fuzz_gguf"
SOURCES=(tests/fuzz_gguf.cc src/gguf/gguf.cc src/quant/quant_types.cc src/quant/dequant.cc src/quant/lq_format.cc src/util/error.cc
         src/util/fp16.cc src/tokenizer/tokenizer.cc src/tokenizer/spm.cc src/tokenizer/bpe.cc src/model/arch.cc)
if [ ! -x "$BIN" ] || [ -n "$(find "$SRC/src" "$SRC/tests/fuzz_gguf.cc" -newer "$BIN" -print -quit)" ]; then
  # The project's base ISA flags, as everywhere else (the headers assume F16C).
  (cd "$SRC" && "$CXX" -std=c++20 -O1 -g -mavx2 -mfma -mf16c -mbmi2 \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc -Iinclude "${SOURCES[@]}" \
    -lpcre2-8 -o "$BIN.tmp")
  mv "$BIN.tmp" "$BIN"
fi

# Fresh seeds and an empty corpus every run, so that a run depends only on the sources (and on
# libFuzzer's seed, printed below).
rm -rf "$WORK/seeds" "$WORK/corpus"
mkdir -p "$WORK/corpus"
"$SRC/.venv/bin/python" "$SRC/tests/fuzz_gguf_seeds.py" "$WORK/seeds"

# A seed that does not parse would leave the fuzzer in the parser's error paths: check them first.
count() { grep -c "^fuzz_gguf: $1" "$WORK/check.log" || true; }
LEANLM_FUZZ_VERBOSE=1 "$BIN" "$WORK"/seeds/*.gguf > "$WORK/check.log" 2>&1 || { cat "$WORK/check.log"; exit 1; }
want=$(ls "$WORK"/seeds/*.gguf | wc -l)
# Counted per seed file (the report right after libFuzzer's "Running: FILE"), not as a total of
# "parsed:" lines: libFuzzer may run an extra empty input of its own, whose report would count too.
parsed_seeds=$(awk '/^Running: /{file=$2; next} file && /^fuzz_gguf: /{if ($2 == "parsed:") n++; file=""} END{print n+0}' \
  "$WORK/check.log")
if [ "$parsed_seeds" != "$want" ]; then
  echo "fuzz_gguf: only $parsed_seeds of $want seeds parse:" >&2; grep -E "^(fuzz_gguf|Running)" "$WORK/check.log" >&2; exit 1
fi
LEANLM_FUZZ_VERBOSE=1 "$BIN" "$WORK"/seeds/*.bad > "$WORK/check.log" 2>&1 || { cat "$WORK/check.log"; exit 1; }
if [ "$(count rejected:)" != "$(ls "$WORK"/seeds/*.bad | wc -l)" ]; then
  echo "fuzz_gguf: a hostile seed parses:" >&2; grep "^fuzz_gguf" "$WORK/check.log" >&2; exit 1
fi
# The fixture models must pass every check and every loader step.
models=("$WORK"/*.gguf)
if [ -e "${models[0]}" ]; then
  LEANLM_FUZZ_VERBOSE=1 "$BIN" "${models[@]}" > "$WORK/check.log" 2>&1 || { cat "$WORK/check.log"; exit 1; }
  if [ "$(count 'tokenizer: accepted')" != "${#models[@]}" ] || [ "$(count 'architecture: accepted')" != "${#models[@]}" ]; then
    echo "fuzz_gguf: a fixture model is rejected:" >&2; grep "^fuzz_gguf" "$WORK/check.log" >&2; exit 1
  fi
fi

if ! "$BIN" -runs="$RUNS" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "$WORK/corpus" "$WORK/seeds" > "$WORK/fuzz.log" 2>&1; then
  tail -80 "$WORK/fuzz.log"
  exit 1
fi
grep -E "^INFO: Seed:|^Done|^stat::" "$WORK/fuzz.log"
