#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (an OpenAI-compatible completion server) from the llama.cpp
# sources vendored in the pinned llama-cpp-python sdist, with the same portable CPU flags as the
# wheel, and caches it as $STREAMST_HOME/bin/llama-server-<version>. Opt-in: streamst's own
# translator needs no server; `--translator-url` and the scale-out tests and benchmark do.
# Safe to run again: a cached binary is kept (prints its path and exits). Nothing is downloaded
# at build time but the sdist from PyPI (skipped when it is cached too); the server's web UI is off.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_VERSION=0.3.36
LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"}
STREAMST_HOME=${STREAMST_HOME:-$HOME/.cache/streamst}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
JOBS=${JOBS:-$(nproc)}
binary="$STREAMST_HOME/bin/llama-server-$LLAMA_VERSION"

say() { printf '\033[1m[llama-server]\033[0m %s\n' "$*" >&2; }

if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
for tool in cmake g++ make; do
  command -v "$tool" >/dev/null || { say "please install $tool (e.g. apt-get install cmake g++ make)"; exit 1; }
done

sdists="$STREAMST_HOME/sdists"
sdist="$sdists/llama_cpp_python-$LLAMA_VERSION.tar.gz"
mkdir -p "$sdists" "$STREAMST_HOME/bin"
if [ ! -f "$sdist" ]; then
  say "downloading the llama-cpp-python $LLAMA_VERSION sdist from PyPI (75 MB)"
  "$PYTHON" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$LLAMA_VERSION" -d "$sdists"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar xzf "$sdist" -C "$work"
src="$work/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp"

say "building llama-server from llama.cpp in llama-cpp-python $LLAMA_VERSION ($JOBS jobs; about 10 minutes on 2 cores)"
# shellcheck disable=SC2086
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  $LLAMA_CMAKE_ARGS >"$work/configure.log" 2>&1 || { tail -40 "$work/configure.log" >&2; exit 1; }
cmake --build "$work/build" --target llama-server -j "$JOBS" >"$work/build.log" 2>&1 \
  || { tail -60 "$work/build.log" >&2; exit 1; }
install -m 0755 "$work/build/bin/llama-server" "$binary.tmp"
mv "$binary.tmp" "$binary"
say "built $binary"
echo "$binary"
