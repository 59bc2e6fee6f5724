#!/usr/bin/env bash
# Prints the path of the llama-cpp-python sdist (it ships llama.cpp's sources: llama-bench,
# llama-server, the server's own tests), downloading it from PyPI into .cache/sdist/ the first time.
# Shared by scripts/setup.sh --reference, bench/build_llamacpp.sh and tests/llamacpp_server_tests.py,
# so that a machine fetches the 76 MB once.
#
#   scripts/llamacpp_sdist.sh PYTHON [VERSION]     (no VERSION: the newest on PyPI, fetched each time)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$1"
VER="${2:-}"
DIR="$ROOT/.cache/sdist"
if [ -n "$VER" ] && [ -s "$DIR/llama_cpp_python-$VER.tar.gz" ]; then
  echo "$DIR/llama_cpp_python-$VER.tar.gz"
  exit 0
fi
mkdir -p "$DIR"
# Downloaded beside the cache and moved in whole: an interrupted download leaves no partial tarball.
tmp=$(mktemp -d "$DIR/.download.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
spec=llama-cpp-python
[ -n "$VER" ] && spec="llama-cpp-python==$VER"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$tmp" "$spec" >&2
files=("$tmp"/llama_cpp_python-*.tar.gz)
[ -s "${files[0]}" ] || { echo "llamacpp_sdist.sh: pip download of $spec gave no sdist" >&2; exit 1; }
mv "${files[0]}" "$DIR/"
echo "$DIR/$(basename "${files[0]}")"
