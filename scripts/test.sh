#!/usr/bin/env bash
# Sets everything up (as scripts/setup.sh), then runs the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests cover the optional parts too: the SenseVoice and transformers backends need torch.
export STREAMST_EXTRAS=${STREAMST_EXTRAS:-test,bench,mic,torch}
scripts/setup.sh
# llama-server for the remote-decoder tests (about 10 minutes on 2 cores the first time, cached after);
# STREAMST_LLAMA_SERVER_BUILD=0 skips it, and those tests skip with the reason.
if [ "${STREAMST_LLAMA_SERVER_BUILD:-1}" != 0 ]; then
  scripts/build_llama_server.sh >/dev/null
fi
. .venv/bin/activate
exec python -m pytest "$@"
