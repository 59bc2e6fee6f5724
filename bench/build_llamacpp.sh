#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-perplexity, llama-server, llama-quantize and llama-imatrix from
# the sources that the PyPI package llama-cpp-python ships, for the comparisons in bench/.
#
#   bench/build_llamacpp.sh            -> build-llamacpp/bin/       (native: every ISA this CPU has)
#   bench/build_llamacpp.sh avx2       -> build-llamacpp-avx2/bin/  (AVX2+FMA+F16C only, no AVX-512/VNNI:
#                                          the kernel set an AVX2-only CPU runs, to compare with
#                                          LEANLM_ISA=avx2 on any machine)
# The version is the one installed in .venv when there is one, else the newest on PyPI.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FLAVOUR="${1:-native}"
case "$FLAVOUR" in
  # AMX off: a process must ask the kernel for the AMX tile state, and llama.cpp built with it died
  # with an illegal instruction on a Xeon here (leanlm does not use AMX either).
  native) OUT=build-llamacpp
          FLAGS=(-DGGML_NATIVE=ON "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
                 "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16") ;;
  avx2) OUT=build-llamacpp-avx2
        FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
               -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF) ;;
  *) echo "build_llamacpp.sh: flavour is native or avx2, not '$FLAVOUR'" >&2; exit 2 ;;
esac
TARGETS=(llama-bench llama-perplexity llama-server llama-quantize llama-imatrix)
have=1
for t in "${TARGETS[@]}"; do [ -x "$OUT/bin/$t" ] || have=0; done
if [ "$have" = 1 ]; then echo "$OUT/bin/llama-bench is there"; exit 0; fi
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
spec=llama-cpp-python
ver=$($PY -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))" 2>/dev/null) || ver=""
[ -n "$ver" ] && spec="llama-cpp-python==$ver"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar xzf "$(scripts/llamacpp_sdist.sh "$PY" $ver)" -C "$tmp"
rm -f "$OUT/CMakeCache.txt"  # configured from an earlier (deleted) unpacked source
cmake -S "$tmp"/llama_cpp_python-*/vendor/llama.cpp -B "$OUT" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  "${FLAGS[@]}" -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
cmake --build "$OUT" --parallel "$(nproc)" --target "${TARGETS[@]}" >/dev/null
echo "built $OUT/bin/llama-bench ($spec, $FLAVOUR)"
