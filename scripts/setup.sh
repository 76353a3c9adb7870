#!/usr/bin/env bash
# Sets streamst up on a fresh machine: system tools, a virtual environment in .venv, the
# llama.cpp build, and the default models. Safe to run again; it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
LLAMA_VERSION=0.3.36
# A portable x86-64 build (AVX2/FMA/F16C). The native build enables AMX/AVX-512 kernels that
# crash on some virtual machines; set LLAMA_CMAKE_ARGS to override.
LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"}
STREAMST_HOME=${STREAMST_HOME:-$HOME/.cache/streamst}
EXTRAS=${STREAMST_EXTRAS:-bench,mic}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# System tools: espeak-ng (demo speech), ffmpeg (audio formats in tests), PortAudio (the
# microphone client), chromium and a CJK font (the browser test and its screenshots), PulseAudio
# with the ALSA plugin (the virtual microphone in tests), HAProxy (the balancer in front of two
# replicas in tests; deploy/haproxy). STREAMST_APT=0 skips this step.
packages=(espeak-ng ffmpeg libportaudio2 chromium fonts-wqy-microhei pulseaudio pulseaudio-utils libasound2-plugins haproxy)
missing=()
for pkg in "${packages[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ] && [ "${STREAMST_APT:-1}" != 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif ! command -v espeak-ng >/dev/null; then
    say "please install: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})"; exit 1
  fi
fi

[ -x .venv/bin/python ] || { say "creating .venv"; "$PYTHON" -m venv .venv; }
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip

if ! python -c "import llama_cpp" 2>/dev/null; then
  wheels="$STREAMST_HOME/wheels"
  mkdir -p "$wheels"
  if ! ls "$wheels"/llama_cpp_python-$LLAMA_VERSION-*.whl >/dev/null 2>&1; then
    say "building llama-cpp-python $LLAMA_VERSION from source (about 7 minutes on 2 cores)"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" python -m pip wheel -q --no-cache-dir --no-deps \
      "llama-cpp-python==$LLAMA_VERSION" -w "$wheels"
  fi
  python -m pip install -q "$wheels"/llama_cpp_python-$LLAMA_VERSION-*.whl
fi

say "installing streamst and its dependencies"
case ",$EXTRAS," in
  # The CPU build of torch first, so that nothing that needs torch pulls a CUDA build.
  *,torch,*) python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0" ;;
esac
python -m pip install -q -e ".[$EXTRAS]"
case ",$EXTRAS," in
  *,bench,*) python -m pip install -q --no-deps "simuleval==1.1.4" ;;
esac

say "fetching the default models into $STREAMST_HOME (about 1.7 GB the first time)"
streamst models pull default
